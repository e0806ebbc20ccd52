"""Reading and watching operations; reading sessions."""

from __future__ import annotations

import grpc
import pytest

from callcontrol.events import CallInitiated, CommandResult, Subscription
from callcontrol.simulator import FreeSwitchSimulator
from callcontrol.v1 import commands_pb2, operations_pb2, sessions_pb2
from tests.conftest import DEMO_AUTH, Stubs, next_event


async def test_watch_streams_the_current_state_then_the_outcome_and_ends(
    simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> None:
    call = await simulator.place_call(answer_delay=0.3)
    await next_event(events, CallInitiated, call.uuid)
    envelope = await stubs.commands.Answer(
        commands_pb2.AnswerRequest(session_id=call.uuid), metadata=DEMO_AUTH
    )

    stream = stubs.operations.WatchOperation(
        operations_pb2.WatchOperationRequest(operation_id=envelope.operation_id), metadata=DEMO_AUTH
    )
    states = [op.status async for op in stream]

    assert states == ["in_progress", "succeeded"]
    assert await stream.code() is grpc.StatusCode.OK


async def test_watch_of_a_finished_operation_sends_it_once_and_ends(
    simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> None:
    call = await simulator.place_call()
    await next_event(events, CallInitiated, call.uuid)
    envelope = await stubs.commands.Hangup(
        commands_pb2.HangupRequest(session_id=call.uuid, cause="CALL_REJECTED"), metadata=DEMO_AUTH
    )
    await next_event(events, CommandResult, call.uuid)

    stream = stubs.operations.WatchOperation(
        operations_pb2.WatchOperationRequest(operation_id=envelope.operation_id), metadata=DEMO_AUTH
    )
    ops = [op async for op in stream]

    assert [(op.status, op.command) for op in ops] == [("succeeded", "hangup")]


async def test_watch_reports_a_timeout_with_its_reason(
    simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> None:
    call = await simulator.place_call(answer_completes=False)
    await next_event(events, CallInitiated, call.uuid)
    envelope = await stubs.commands.Answer(
        commands_pb2.AnswerRequest(session_id=call.uuid), metadata=DEMO_AUTH
    )
    stream = stubs.operations.WatchOperation(
        operations_pb2.WatchOperationRequest(operation_id=envelope.operation_id), metadata=DEMO_AUTH
    )
    ops = [op async for op in stream]
    assert [op.status for op in ops] == ["in_progress", "timed_out"]
    assert ops[-1].error.reason == "timeout"


async def test_unknown_operation_is_not_found(stubs: Stubs) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.operations.GetOperation(
            operations_pb2.GetOperationRequest(operation_id="6211875b-2e87-4011-b202-de38598ef2ef"),
            metadata=DEMO_AUTH,
        )
    assert err.value.code() is grpc.StatusCode.NOT_FOUND


async def test_sessions_list_and_get_show_the_callers_live_calls(
    simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> None:
    calls = []
    for n in range(3):
        call = await simulator.place_call(caller_number=f"100{n}")
        await next_event(events, CallInitiated, call.uuid)
        calls.append(call)
    await stubs.commands.Answer(commands_pb2.AnswerRequest(session_id=calls[0].uuid), metadata=DEMO_AUTH)
    await next_event(events, CommandResult, calls[0].uuid)

    seen = []
    token = ""
    while True:
        page = await stubs.sessions.ListSessions(
            sessions_pb2.ListSessionsRequest(page_size=2, page_token=token), metadata=DEMO_AUTH
        )
        seen += list(page.sessions)
        token = page.next_page_token
        if not token:
            break
    assert sorted(s.session_id for s in seen) == sorted(c.uuid for c in calls)
    got = await stubs.sessions.GetSession(
        sessions_pb2.GetSessionRequest(session_id=calls[0].uuid), metadata=DEMO_AUTH
    )
    assert (got.state, got.caller_number, got.HasField("answered_at")) == ("answered", "1000", True)
    other = await stubs.sessions.GetSession(
        sessions_pb2.GetSessionRequest(session_id=calls[1].uuid), metadata=DEMO_AUTH
    )
    assert (other.state, other.HasField("answered_at")) == ("ringing", False)
