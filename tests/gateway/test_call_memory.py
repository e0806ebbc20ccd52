"""What the gateway keeps of a live call: the channel fields it reads, not the connect reply."""

from __future__ import annotations

import asyncio
from typing import Any

from callcontrol.events import CallInitiated, Subscription
from callcontrol.gateway import Gateway
from callcontrol.simulator import FreeSwitchSimulator
from tests.conftest import next_event


async def test_a_live_call_keeps_only_the_channel_fields_the_gateway_reads(
    gateway: Gateway, simulator: FreeSwitchSimulator, events: Subscription
) -> None:
    call = await simulator.place_call(caller_number="+15551230000")
    await next_event(events, CallInitiated, call.uuid)

    channel = gateway.control._calls[call.uuid].channel
    # The connect reply has ~150 headers; only these few are read (and so kept) for the call's life.
    assert set(channel.channel_data) <= set(gateway.control.channel_fields)
    assert channel.channel_data["Unique-ID"] == call.uuid
    assert channel.channel_data["Caller-Caller-ID-Number"] == "+15551230000"
    # greenswitch's own copy of the reply is the same few fields.
    assert channel._session.session_data == channel.channel_data


async def test_no_greenlet_waits_out_a_live_call_besides_its_reader(
    gateway: Gateway, simulator: FreeSwitchSimulator, events: Subscription
) -> None:
    """The accept greenlet ends once the call is set up (it held the decoded reply in its frame)."""
    call = await simulator.place_call()
    await next_event(events, CallInitiated, call.uuid)
    server = gateway.link._server
    assert server is not None
    # StreamServer spawns the accept handlers in its own greenlets; none stays for a live call.
    deadline = asyncio.get_running_loop().time() + 5
    while not _handlers_done(server):
        assert asyncio.get_running_loop().time() < deadline, "an accept greenlet is still running"
        await asyncio.sleep(0.01)
    assert call.uuid in gateway.control._calls  # the call itself is still live


def _handlers_done(server: object) -> bool:
    import gc

    import gevent
    from gevent.baseserver import _handle_and_close_when_done

    # A greenlet is cross-thread state; only its `dead` flag and run target are read here.
    return not any(
        isinstance(obj, gevent.Greenlet) and not obj.dead and obj._run is _handle_and_close_when_done
        for obj in gc.get_objects()
    )


async def test_a_live_call_holds_no_file_object_over_its_socket(
    gateway: Gateway, simulator: FreeSwitchSimulator, events: Subscription
) -> None:
    """greenswitch's constructor builds a makefile() reader that nothing reads; none is built."""
    import io

    session = await _live_session(gateway, simulator, events)
    assert not isinstance(session.sock_file, io.IOBase)
    assert session.sock.fileno() >= 0  # the socket itself is the call's


async def test_a_live_call_holds_no_greenswitch_event_queue(
    gateway: Gateway, simulator: FreeSwitchSimulator, events: Subscription
) -> None:
    """greenswitch's constructor builds a queue for its own event dispatch, which the gateway's
    reader replaces; it is not kept for the call's life (about 2.5 kB per call)."""
    import gevent.queue

    session = await _live_session(gateway, simulator, events)
    assert not isinstance(session._esl_event_queue, gevent.queue.Queue)


async def test_a_live_calls_reader_holds_no_received_bytes_while_it_waits(
    gateway: Gateway, simulator: FreeSwitchSimulator, events: Subscription
) -> None:
    """The reader waits in recv for most of a call's life: a chunk it still referenced across
    that wait (the set-up replies, a few kB) stayed in memory as long as the call."""
    import concurrent.futures

    reader = (await _live_session(gateway, simulator, events))._receive_events_greenlet
    held: concurrent.futures.Future[list[str]] = concurrent.futures.Future()
    # A greenlet's frames are read on its own (the gevent) thread, where it is suspended.
    gateway.link.submit_nowait(lambda: held.set_result(_bytes_on_stack(reader)))
    assert await asyncio.wrap_future(held) == []


def _bytes_on_stack(greenlet: object) -> list[str]:
    """``function.name`` of every non-empty bytes-like local on a suspended greenlet's stack."""
    found: list[str] = []
    frame = getattr(greenlet, "gr_frame", None)
    while frame is not None:
        found += [
            f"{frame.f_code.co_name}.{name}"
            for name, value in frame.f_locals.items()
            if isinstance(value, bytes | bytearray | memoryview) and len(value)
        ]
        frame = frame.f_back
    return found


async def _live_session(gateway: Gateway, simulator: FreeSwitchSimulator, events: Subscription) -> Any:
    """The Event Socket session (greenswitch's, as the link extends it) of a new live call."""
    call = await simulator.place_call()
    await next_event(events, CallInitiated, call.uuid)
    return gateway.control._calls[call.uuid].channel._session
