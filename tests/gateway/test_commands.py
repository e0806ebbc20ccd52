"""Commands end to end: simulator ↔ outbound ESL ↔ gateway ↔ gRPC client, all over TCP."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest

from callcontrol.events import CallAnswered, CallHangup, CommandResult, Subscription
from callcontrol.gateway import Gateway
from callcontrol.simulator import FreeSwitchSimulator, SimulatedCall
from callcontrol.v1 import commands_pb2, operations_pb2
from tests.conftest import DEMO_AUTH, Stubs, drain, next_event


async def _connected(sim: FreeSwitchSimulator, events: Subscription, **kwargs: object) -> SimulatedCall:
    from callcontrol.events import CallInitiated

    call = await sim.place_call(**kwargs)  # type: ignore[arg-type]
    await next_event(events, CallInitiated, call.uuid)
    return call


async def _until_hangup(events: Subscription, session_id: str) -> list[object]:
    got: list[object] = []
    while not got or not isinstance(got[-1], CallHangup):
        event = await asyncio.wait_for(events.get(), 5)
        if event.session_id == session_id:
            got.append(event)
    return got


def _sendmsgs(call: SimulatedCall) -> list[dict[str, str]]:
    return [dict(c.headers) for c in call.commands if c.line.startswith("sendmsg")]


async def test_answer_succeeds_on_execute_complete_with_the_operation_id(
    simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> None:
    call = await _connected(simulator, events)

    envelope = await stubs.commands.Answer(
        commands_pb2.AnswerRequest(session_id=call.uuid), metadata=DEMO_AUTH
    )

    assert envelope.status == "in_progress"
    assert envelope.timeout_ms == 2000
    answered = await next_event(events, CallAnswered, call.uuid)
    result = await next_event(events, CommandResult, call.uuid)
    assert answered.occurred_at <= result.occurred_at
    assert (result.operation_id, result.command, result.status) == (
        envelope.operation_id,
        "answer",
        "succeeded",
    )
    [sent] = _sendmsgs(call)
    assert sent == {
        "call-command": "execute",
        "execute-app-name": "answer",
        "Event-UUID": envelope.operation_id,
    }
    op = await stubs.operations.GetOperation(
        operations_pb2.GetOperationRequest(operation_id=envelope.operation_id), metadata=DEMO_AUTH
    )
    assert op.status == "succeeded"
    assert op.HasField("finished_at")
    assert call.state == "answered"


async def test_answer_times_out_after_2s_and_a_late_confirmation_still_answers_once(
    simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> None:
    call = await _connected(simulator, events, answer_delay=2.6)

    started = time.monotonic()
    envelope = await stubs.commands.Answer(
        commands_pb2.AnswerRequest(session_id=call.uuid), metadata=DEMO_AUTH
    )
    result = await next_event(events, CommandResult, call.uuid)
    elapsed = time.monotonic() - started

    assert result.status == "timed_out"
    assert result.reason == "timeout"
    assert 1.95 <= elapsed < 2.5
    await next_event(events, CallAnswered, call.uuid)  # the late EXECUTE_COMPLETE
    op = await stubs.operations.GetOperation(
        operations_pb2.GetOperationRequest(operation_id=envelope.operation_id), metadata=DEMO_AUTH
    )
    assert op.status == "timed_out"  # terminal: the late confirmation changes nothing
    # Everything up to the teardown: call.answered came exactly once.
    await stubs.commands.Hangup(commands_pb2.HangupRequest(session_id=call.uuid), metadata=DEMO_AUTH)
    seen = [type(e).__name__ for e in await _until_hangup(events, call.uuid)]
    assert seen == ["CommandResult", "CallHangup"]


async def test_answer_that_never_completes_times_out(
    simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> None:
    call = await _connected(simulator, events, answer_completes=False)
    await stubs.commands.Answer(commands_pb2.AnswerRequest(session_id=call.uuid), metadata=DEMO_AUTH)
    result = await next_event(events, CommandResult, call.uuid)
    assert result.status == "timed_out"


async def test_hangup_with_cause_reaches_freeswitch_and_returns_in_call_hangup(
    simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> None:
    call = await _connected(simulator, events)

    envelope = await stubs.commands.Hangup(
        commands_pb2.HangupRequest(session_id=call.uuid, cause="USER_BUSY"), metadata=DEMO_AUTH
    )

    result = await next_event(events, CommandResult, call.uuid)
    hangup = await next_event(events, CallHangup, call.uuid)
    assert (result.operation_id, result.command, result.status) == (
        envelope.operation_id,
        "hangup",
        "succeeded",
    )
    assert result.occurred_at <= hangup.occurred_at
    assert (hangup.cause, hangup.q850_code) == ("USER_BUSY", 17)
    assert _sendmsgs(call) == [{"call-command": "hangup", "hangup-cause": "USER_BUSY"}]
    # FreeSWITCH lingers for us; the gateway releases the channel with exit.
    await call.wait_closed()
    assert call.commands[-1].line == "exit"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.commands.Answer(commands_pb2.AnswerRequest(session_id=call.uuid), metadata=DEMO_AUTH)
    assert err.value.code() is grpc.StatusCode.NOT_FOUND


async def test_hangup_defaults_to_normal_clearing(
    simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> None:
    call = await _connected(simulator, events)
    await stubs.commands.Hangup(commands_pb2.HangupRequest(session_id=call.uuid), metadata=DEMO_AUTH)
    hangup = await next_event(events, CallHangup, call.uuid)
    assert (hangup.cause, hangup.q850_code) == ("NORMAL_CLEARING", 16)


async def test_disconnect_returns_the_call_to_the_dialplan_and_refuses_later_commands(
    simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> None:
    call = await _connected(simulator, events)

    envelope = await stubs.commands.Disconnect(
        commands_pb2.DisconnectRequest(session_id=call.uuid, command_uid="bye-1"), metadata=DEMO_AUTH
    )

    result = await next_event(events, CommandResult, call.uuid)
    assert (result.operation_id, result.status) == (envelope.operation_id, "succeeded")
    await call.wait_closed()
    assert call.returned_to_dialplan.is_set()
    assert [c.line for c in call.commands][-1] == "exit"
    refused: tuple[tuple[Any, Any], ...] = (
        (stubs.commands.Answer, commands_pb2.AnswerRequest(session_id=call.uuid)),
        (stubs.commands.Hangup, commands_pb2.HangupRequest(session_id=call.uuid)),
        (stubs.commands.Disconnect, commands_pb2.DisconnectRequest(session_id=call.uuid)),
    )
    for rpc, request in refused:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await rpc(request, metadata=DEMO_AUTH)
        assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    # The same disconnect repeated is idempotent, not an error.
    again = await stubs.commands.Disconnect(
        commands_pb2.DisconnectRequest(session_id=call.uuid, command_uid="bye-1"), metadata=DEMO_AUTH
    )
    assert again.operation_id == envelope.operation_id
    # The call went back to the dialplan: no call.hangup from the gateway.
    assert not [e for e in drain(events) if isinstance(e, CallHangup)]


async def test_idempotent_repeat_returns_the_first_operation_and_sends_once(
    simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> None:
    call = await _connected(simulator, events)
    request = commands_pb2.AnswerRequest(session_id=call.uuid, command_uid="answer-42")

    first = await stubs.commands.Answer(request, metadata=DEMO_AUTH)
    await next_event(events, CommandResult, call.uuid)
    second = await stubs.commands.Answer(request, metadata=DEMO_AUTH)

    assert second.operation_id == first.operation_id
    assert len(_sendmsgs(call)) == 1
    assert not [e for e in drain(events) if isinstance(e, CommandResult)]


async def test_command_uid_reused_for_another_command_is_refused(
    simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> None:
    call = await _connected(simulator, events)
    await stubs.commands.Answer(
        commands_pb2.AnswerRequest(session_id=call.uuid, command_uid="k1"), metadata=DEMO_AUTH
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.commands.Hangup(
            commands_pb2.HangupRequest(session_id=call.uuid, command_uid="k1"), metadata=DEMO_AUTH
        )
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert len(_sendmsgs(call)) == 1


async def test_freeswitch_error_reply_fails_the_operation(
    simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> None:
    call = await _connected(simulator, events, error_replies={"sendmsg": "-ERR invalid session id"})
    await stubs.commands.Hangup(commands_pb2.HangupRequest(session_id=call.uuid), metadata=DEMO_AUTH)
    result = await next_event(events, CommandResult, call.uuid)
    assert (result.status, result.reason) == ("failed", "freeswitch_error")
    assert "-ERR" in result.message


async def test_call_with_no_known_owner_returns_to_the_dialplan(
    gateway: Gateway, simulator: FreeSwitchSimulator, events: Subscription
) -> None:
    for app_id in (None, "no-such-app"):
        call = await simulator.place_call(app_id=app_id)
        await call.wait_closed()
        assert call.returned_to_dialplan.is_set()
        assert [c.line for c in call.commands][-1] == "exit"
    assert len(gateway.control.sessions) == 0
    assert drain(events) == []
