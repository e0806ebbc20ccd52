"""Every order FreeSWITCH sends a hangup in, as the simulator plays it on the wire.

Real FreeSWITCH usually sends the whole teardown, CHANNEL_HANGUP_COMPLETE, then the
linger notice; under load and on shutdown the notice can come right after
CHANNEL_HANGUP, and a client that exits at once never sees the complete event
(shared/notes/freeswitch-under-load.md, capture 06).
"""

from __future__ import annotations

import asyncio

import pytest

from callcontrol.esl.frames import encode_disconnect_notice
from callcontrol.simulator import HANGUP_ORDERS, FreeSwitchSimulator
from callcontrol.simulator.__main__ import _parser, run
from tests.transcripts import load
from tests.unit.test_simulator_outbound import (
    GOODBYE,
    HANGUP_SEQUENCE,
    SHUTDOWN,
    RawGateway,
    answer,
    captured_sip_events,
    connected,
    hangup,
    raw_gateway,
    sim,
)

__all__ = ["raw_gateway", "sim"]  # fixtures


def test_every_order_is_described() -> None:
    assert set(HANGUP_ORDERS) == {"complete_first", "notice_first", "close_after_hangup"}


async def test_notice_first_then_the_rest_of_the_teardown_for_a_client_that_waits(
    sim: FreeSwitchSimulator, raw_gateway: RawGateway
) -> None:
    call, side = await connected(sim, raw_gateway, hangup_order="notice_first")
    await side.handshake()
    side.send(answer("a-1"))
    await side.frame()
    await side.events(3)
    await call.caller_hangup()

    first = (await side.events(1))[0]
    assert (first.name, first.get("Hangup-Cause")) == ("CHANNEL_HANGUP", "NORMAL_CLEARING")
    assert first.get("variable_sip_term_status") == "200"
    assert first.get("variable_hangup_cause_q850") is None  # only set at CS_REPORTING
    _, raw = await side.raw_frame()
    assert raw == encode_disconnect_notice(call.uuid, "linger", -1, channel_name=call.channel_name)
    rest = await side.events(5)
    assert [e.name for e in rest] == HANGUP_SEQUENCE[1:]
    assert rest[-1].get("variable_hangup_cause_q850") == "16"
    assert call.socket_open
    assert (await side.command("exit")).reply_text == "+OK bye"
    assert (await side.frame()).body == GOODBYE
    await side.eof()
    await call.wait_state("destroyed")


async def test_notice_first_and_an_exit_at_once_never_shows_the_complete_event(
    sim: FreeSwitchSimulator, raw_gateway: RawGateway
) -> None:
    # A long gap makes the order certain: the exit is read before the teardown is due.
    call, side = await connected(sim, raw_gateway, hangup_order="notice_first", teardown_delay=30)
    await side.handshake()
    side.send(hangup("USER_BUSY"))
    assert (await side.frame()).reply_text == "+OK"
    assert [e.name for e in await side.events(1)] == ["CHANNEL_HANGUP"]
    assert (await side.frame()).headers["Content-Disposition"] == "linger"
    assert not call.hung_up.is_set()

    assert (await side.command("exit")).reply_text == "+OK bye"
    assert (await side.frame()).headers["Content-Disposition"] == "disconnect"
    await side.eof()  # no CHANNEL_HANGUP_COMPLETE, no more events
    assert call.sent[-3:] == ["CHANNEL_HANGUP", "linger", "disconnect"]
    await call.wait_state("destroyed", timeout=5)
    assert call.hangup_cause == "USER_BUSY"
    assert not call.returned_to_dialplan.is_set()


async def test_notice_first_without_linger_is_the_goodbye_and_the_close(
    sim: FreeSwitchSimulator, raw_gateway: RawGateway
) -> None:
    call, side = await connected(sim, raw_gateway, hangup_order="notice_first")
    await side.handshake(linger=None)
    await call.caller_hangup("ORIGINATOR_CANCEL")
    event = (await side.events(1))[0]
    assert (event.name, event.get("Hangup-Cause"), event.get("variable_sip_term_status")) == (
        "CHANNEL_HANGUP",
        "ORIGINATOR_CANCEL",
        "487",
    )
    _, raw = await side.raw_frame()
    assert raw == encode_disconnect_notice(call.uuid, "disconnect", None, GOODBYE)
    await side.eof()
    await call.wait_state("destroyed")


@pytest.mark.parametrize("linger", ["linger", None])
async def test_close_after_hangup_sends_channel_hangup_and_closes(
    sim: FreeSwitchSimulator, raw_gateway: RawGateway, linger: str | None
) -> None:
    call, side = await connected(sim, raw_gateway, hangup_order="close_after_hangup")
    await side.handshake(linger=linger)
    side.send(hangup("CALL_REJECTED"))
    assert (await side.frame()).reply_text == "+OK"
    event = (await side.events(1))[0]
    assert (event.name, event.get("Hangup-Cause")) == ("CHANNEL_HANGUP", "CALL_REJECTED")
    await side.eof()
    await call.wait_state("destroyed")
    assert call.hangup_cause == "CALL_REJECTED"


async def test_shutdown_sends_some_notices_first_and_some_after_the_complete_event(
    sim: FreeSwitchSimulator, raw_gateway: RawGateway
) -> None:
    early, side_early = await connected(sim, raw_gateway)  # FreeSWITCH's usual on shutdown
    await side_early.handshake()
    late, side_late = await connected(sim, raw_gateway, hangup_order="complete_first")
    await side_late.handshake()
    await sim.shutdown_switch(grace=0.1)

    hangup_event = (await side_early.events(1))[0]
    assert hangup_event.get("Hangup-Cause") == "SYSTEM_SHUTDOWN"
    assert (await side_early.frame()).headers["Content-Disposition"] == "linger"
    assert [e.name for e in await side_early.events(5)] == HANGUP_SEQUENCE[1:]

    events = await side_late.events(6)
    assert [e.name for e in events] == HANGUP_SEQUENCE
    assert events[-1].get("variable_hangup_cause_q850") == "16"
    assert (await side_late.frame()).headers["Content-Disposition"] == "linger"

    captured = load("06-freeswitch-shutdown-with-live-session.txt").select("outbound#1", "FS->C")[-1].data
    for call, side in ((early, side_early), (late, side_late)):
        final, raw = await side.raw_frame()
        assert final.body == SHUTDOWN
        assert raw == captured.replace(b"7b242f25-b718-43cb-94ac-fff54d029b05", call.uuid.encode())
        await side.eof()
        await call.wait_state("destroyed")


async def test_cli_mixes_the_orders(raw_gateway: RawGateway) -> None:
    gateway = f"127.0.0.1:{raw_gateway.port}"
    args = _parser().parse_args(
        ["--gateway", gateway, "--calls", "3", "--hold", "0.05", "--hangup-order", "mixed"]
    )
    runner = asyncio.create_task(run(args))
    sides = [await raw_gateway.accept() for _ in range(3)]
    # No myevents and no linger: complete_first and notice_first end with the goodbye
    # notice, close_after_hangup with a bare close.
    endings = []
    for side in sides:
        try:
            endings.append((await side.frame()).body)
        except EOFError:
            endings.append(b"")
    assert sorted(endings) == sorted([GOODBYE, GOODBYE, b""])
    assert await asyncio.wait_for(runner, 10) == 0


CAUSE_VARIABLES = (
    "variable_sip_term_status",
    "variable_proto_specific_hangup_cause",
    "variable_sip_term_cause",
    "variable_sip_hangup_disposition",
    "variable_hangup_cause",
    "variable_hangup_cause_q850",
)


async def test_each_hangup_event_carries_the_cause_headers_of_the_captured_sip_call(
    sim: FreeSwitchSimulator, raw_gateway: RawGateway
) -> None:
    # What the gateway can learn from each event depends on these (capture 05: sipp's BYE).
    captured = captured_sip_events()
    call, side = await connected(sim, raw_gateway)
    await side.handshake()
    side.send(answer("a-1"))
    await side.frame()
    ours = await side.events(3)
    await call.caller_hangup()
    seen: dict[str, int] = {}
    for event in ours + await side.events(6):
        index = seen.get(event.name, 0)
        seen[event.name] = index + 1
        real = captured[event.name][index]
        got = {name: event.get(name) for name in ("Hangup-Cause", *CAUSE_VARIABLES)}
        assert got == {name: real.get(name) for name in got}, event.name
