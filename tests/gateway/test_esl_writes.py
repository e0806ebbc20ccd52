"""How commands reach a call's socket: from the loop thread, in order, with no wake-up of the
gevent thread unless the socket does not take a write whole."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from callcontrol.esl.frames import encode_command, encode_reply
from callcontrol.esl.link import Reply
from callcontrol.events import Subscription
from callcontrol.gateway import Gateway
from callcontrol.simulator import FreeSwitchSimulator
from tests.conftest import Stubs
from tests.gateway.calls import answer_succeeds, connected, raw_connected


async def test_a_command_to_a_live_call_wakes_no_gevent_thread(
    gateway: Gateway,
    simulator: FreeSwitchSimulator,
    stubs: Stubs,
    events: Subscription,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    call = await connected(simulator, events)
    submitted: list[Any] = []
    submit = gateway.link.submit_nowait

    def counting(fn: Any, *args: Any) -> None:
        submitted.append(fn)
        submit(fn, *args)

    monkeypatch.setattr(gateway.link, "submit_nowait", counting)
    # The answer is written, FreeSWITCH replies and confirms: no hub wake-up on the way.
    await answer_succeeds(stubs, events, call.uuid)
    assert submitted == []


async def test_a_write_the_socket_does_not_take_whole_goes_on_in_order(
    gateway: Gateway, events: Subscription
) -> None:
    peer = await raw_connected(gateway, events)
    channel = gateway.control._calls[peer.uuid].channel
    session = channel._session

    replies: list[str] = []

    def on_reply(reply: Reply) -> None:
        replies.append(reply.text)

    # The peer reads nothing yet: commands fill the socket until one is not taken whole.
    body = b"x" * 65536
    sent = 0
    while session._loop_writes:
        assert sent < 2048, "the socket took 128 MB without pushing back"
        channel.send(encode_command("sendmsg", body=body), on_reply)
        sent += 1
    # Later commands go behind the rest of that one, through the gevent side.
    channel.send(encode_command("sendmsg", body=b"last"), on_reply)
    channel.send(encode_command("sendmsg", body=b"very last"), on_reply)

    bodies = []
    for index in range(sent + 2):
        command = await peer.command()
        assert command.line == "sendmsg"
        bodies.append(command.body)
        peer.send(encode_reply(f"+OK {index}"))
    assert bodies == [body] * sent + [b"last", b"very last"]
    await peer.drain()
    deadline = asyncio.get_running_loop().time() + 5
    while len(replies) < sent + 2:
        assert asyncio.get_running_loop().time() < deadline, f"{len(replies)} of {sent + 2} replies"
        await asyncio.sleep(0.01)
    # Replies are positional: each reached its own command.
    assert replies == [f"+OK {index}" for index in range(sent + 2)]
    await peer.finish()


async def test_ended_calls_leave_no_descriptor_open(
    gateway: Gateway, simulator: FreeSwitchSimulator, events: Subscription
) -> None:
    """Each call's socket is closed once (by its reader) when the call ends: no file object or
    second reference keeps a descriptor, and none is closed twice."""
    import os

    async def settled() -> int:
        deadline = asyncio.get_running_loop().time() + 5
        while gateway.link._sessions:
            assert asyncio.get_running_loop().time() < deadline, "sessions still open"
            await asyncio.sleep(0.01)
        return len(os.listdir("/proc/self/fd"))

    warm = await connected(simulator, events)  # listeners, loops and pools exist from here on
    await warm.caller_hangup()
    await warm.wait_closed()
    before = await settled()
    calls = [await connected(simulator, events) for _ in range(20)]
    for call in calls:
        await call.caller_hangup()
    for call in calls:
        await call.wait_closed()
    deadline = asyncio.get_running_loop().time() + 5
    while (now := await settled()) > before:
        assert asyncio.get_running_loop().time() < deadline, f"{now - before} descriptors left open"
        await asyncio.sleep(0.01)
