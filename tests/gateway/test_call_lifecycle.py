"""Calls that end on FreeSWITCH's side: caller hangup, socket drop, switch shutdown."""

from __future__ import annotations

import grpc
import pytest

from callcontrol.config import Address, EslConfig, GatewayConfig
from callcontrol.esl.frames import encode_reply
from callcontrol.events import CallAnswered, CallHangup, CallInitiated, CommandResult, Subscription
from callcontrol.gateway import Gateway
from callcontrol.simulator import FreeSwitchSimulator, SimulatedCall
from callcontrol.v1 import commands_pb2
from tests.conftest import DEMO_AUTH, Stubs, drain, make_config, next_event
from tests.esl_peer import RawPeer
from tests.gateway.calls import esl_address


async def _connected(sim: FreeSwitchSimulator, events: Subscription, **kwargs: object) -> SimulatedCall:
    call = await sim.place_call(**kwargs)  # type: ignore[arg-type]
    await next_event(events, CallInitiated, call.uuid)
    return call


async def test_call_initiated_carries_the_channel_data(
    simulator: FreeSwitchSimulator, events: Subscription
) -> None:
    call = await simulator.place_call(caller_number="+15551230000", destination_number="8084")
    initiated = await next_event(events, CallInitiated, call.uuid)
    assert (initiated.app_id, initiated.caller_number, initiated.destination_number, initiated.direction) == (
        "demo-app",
        "+15551230000",
        "8084",
        "inbound",
    )
    assert [c.line for c in call.commands[:3]] == ["connect", "myevents", "linger"]


async def test_set_up_sends_connect_myevents_and_linger_at_once(
    gateway: Gateway, events: Subscription
) -> None:
    # FreeSWITCH reads an outbound socket's commands one by one off the stream: set-up need
    # not wait for each reply before the next command (one round trip, not three).
    peer = await RawPeer.open(esl_address(gateway))
    try:
        for line in ("connect", "myevents", "linger"):
            await peer.expect(line, timeout=2.0)  # no reply sent yet
        peer.send(peer.connect_reply("demo-app"))
        peer.send(encode_reply("+OK Events Enabled") + encode_reply("+OK will linger"))
        initiated = await next_event(events, CallInitiated, peer.uuid)
        assert initiated.app_id == "demo-app"
    finally:
        peer.abort()


async def test_caller_hangs_up_first_fails_the_open_answer_and_reports_the_hangup(
    gateway: Gateway, simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> None:
    call = await _connected(simulator, events, answer_completes=False)
    envelope = await stubs.commands.Answer(
        commands_pb2.AnswerRequest(session_id=call.uuid), metadata=DEMO_AUTH
    )
    await call.wait_for_command(lambda c: c.line.startswith("sendmsg"))

    await call.caller_hangup("ORIGINATOR_CANCEL")

    result = await next_event(events, CommandResult, call.uuid)
    assert (result.operation_id, result.status, result.reason) == (
        envelope.operation_id,
        "failed",
        "call_hangup",
    )
    hangup = await next_event(events, CallHangup, call.uuid)
    assert (hangup.cause, hangup.q850_code, hangup.sip_code, hangup.reason) == (
        "ORIGINATOR_CANCEL",
        16,
        487,
        "",
    )  # FreeSWITCH maps causes above 127 to 16
    await call.wait_closed()  # released with exit after the linger notice
    assert call.commands[-1].line == "exit"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.commands.Hangup(commands_pb2.HangupRequest(session_id=call.uuid), metadata=DEMO_AUTH)
    assert err.value.code() is grpc.StatusCode.NOT_FOUND
    assert len(gateway.control.sessions) == 0


async def test_socket_drop_fails_open_operations_reports_hangup_and_spares_other_calls(
    simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> None:
    lost = await _connected(simulator, events, answer_completes=False)
    other = await _connected(simulator, events)
    await stubs.commands.Answer(commands_pb2.AnswerRequest(session_id=lost.uuid), metadata=DEMO_AUTH)
    await lost.wait_for_command(lambda c: c.line.startswith("sendmsg"))

    await lost.drop_socket()

    result = await next_event(events, CommandResult, lost.uuid)
    assert (result.status, result.reason) == ("failed", "connection_lost")
    hangup = await next_event(events, CallHangup, lost.uuid)
    assert (hangup.cause, hangup.reason) == ("UNKNOWN", "connection_lost")
    await stubs.commands.Answer(commands_pb2.AnswerRequest(session_id=other.uuid), metadata=DEMO_AUTH)
    assert (await next_event(events, CommandResult, other.uuid)).status == "succeeded"


async def test_freeswitch_shutdown_hangs_up_every_call_with_system_shutdown(
    gateway: Gateway, simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> None:
    calls = [await _connected(simulator, events) for _ in range(3)]
    await stubs.commands.Answer(commands_pb2.AnswerRequest(session_id=calls[0].uuid), metadata=DEMO_AUTH)
    await next_event(events, CallAnswered, calls[0].uuid)

    await simulator.shutdown_switch()

    causes = {}
    for _ in calls:
        hangup = await next_event(events, CallHangup)
        causes[hangup.session_id] = hangup.cause
    assert causes == {c.uuid: "SYSTEM_SHUTDOWN" for c in calls}
    for call in calls:
        await call.wait_closed()
    assert len(gateway.control.sessions) == 0


async def test_gateway_shutdown_returns_calls_to_the_dialplan_without_reporting_a_hangup(
    gateway: Gateway, simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> None:
    call = await _connected(simulator, events, answer_completes=False)
    await stubs.commands.Answer(commands_pb2.AnswerRequest(session_id=call.uuid), metadata=DEMO_AUTH)
    await call.wait_for_command(lambda c: c.line.startswith("sendmsg"))

    await gateway.shutdown()

    result = await next_event(events, CommandResult, call.uuid)
    assert (result.status, result.reason) == ("failed", "gateway_shutdown")
    await call.wait_closed()
    assert call.returned_to_dialplan.is_set()
    assert not [e for e in drain(events) if isinstance(e, CallHangup)]


@pytest.mark.parametrize(
    "config", [make_config(esl=EslConfig(listen=Address("127.0.0.1", 0), reply_timeout_ms=300))]
)
async def test_a_command_freeswitch_never_answers_closes_that_socket_only(
    simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription, config: GatewayConfig
) -> None:
    wedged = await _connected(simulator, events, unanswered={"sendmsg"})
    other = await _connected(simulator, events)

    await stubs.commands.Hangup(commands_pb2.HangupRequest(session_id=wedged.uuid), metadata=DEMO_AUTH)

    result = await next_event(events, CommandResult, wedged.uuid)
    assert (result.status, result.reason) == ("failed", "connection_lost")
    hangup = await next_event(events, CallHangup, wedged.uuid)
    assert hangup.reason == "connection_lost"
    await wedged.wait_closed()
    await stubs.commands.Answer(commands_pb2.AnswerRequest(session_id=other.uuid), metadata=DEMO_AUTH)
    assert (await next_event(events, CommandResult, other.uuid)).status == "succeeded"
