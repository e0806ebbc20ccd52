"""Commands in progress and open watches are capped per application (and session), over gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from callcontrol.config import DEMO_APP_ID, GatewayConfig, OperationsConfig
from callcontrol.esl.frames import Command
from callcontrol.events import CallInitiated, Subscription
from callcontrol.gateway import Gateway
from callcontrol.simulator import FreeSwitchSimulator
from callcontrol.v1 import commands_pb2, operations_pb2
from tests.conftest import DEMO_AUTH, OTHER_APP_ID, OTHER_AUTH, Stubs, make_config, next_event


@pytest.fixture
def config() -> GatewayConfig:
    return make_config(
        operations=OperationsConfig(timeout_ms=5000, max_in_progress_per_session=2, max_watchers_per_app=2)
    )


def _answers(commands: list[Command]) -> int:
    return sum(1 for c in commands if c.headers.get("execute-app-name") == "answer")


def _carrying(operation_id: str) -> Callable[[Command], bool]:
    return lambda c: c.headers.get("Event-UUID") == operation_id


async def _status(watch: Any) -> str:
    op: operations_pb2.Operation = await watch.read()
    return op.status


async def test_commands_in_progress_are_capped_per_session_and_the_refused_one_sends_nothing(
    gateway: Gateway, simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> None:
    call = await simulator.place_call(answer_completes=False)
    await next_event(events, CallInitiated, call.uuid)
    for n in range(2):
        op = await stubs.commands.Answer(
            commands_pb2.AnswerRequest(session_id=call.uuid, command_uid=f"a{n}"), metadata=DEMO_AUTH
        )
        await call.wait_for_command(_carrying(op.operation_id))

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stubs.commands.Answer(
            commands_pb2.AnswerRequest(session_id=call.uuid, command_uid="a2"), metadata=DEMO_AUTH
        )
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    # Refused before anything was started or sent; the key stays free for a later retry.
    assert gateway.control.operations.find(DEMO_APP_ID, call.uuid, "a2", "answer") is None
    assert _answers(call.commands) == 2


async def test_open_watches_are_capped_per_application_and_freed_when_a_client_goes(
    simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> None:
    call = await simulator.place_call(answer_completes=False)
    await next_event(events, CallInitiated, call.uuid)
    op = await stubs.commands.Answer(commands_pb2.AnswerRequest(session_id=call.uuid), metadata=DEMO_AUTH)
    request = operations_pb2.WatchOperationRequest(operation_id=op.operation_id)
    watches = [stubs.operations.WatchOperation(request, metadata=DEMO_AUTH) for _ in range(2)]
    for watch in watches:
        assert await _status(watch) == "in_progress"

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stubs.operations.WatchOperation(request, metadata=DEMO_AUTH).read()
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED

    # Another application is not affected by this one's watches.
    theirs_call = await simulator.place_call(app_id=OTHER_APP_ID, answer_completes=False)
    await next_event(events, CallInitiated, theirs_call.uuid)
    theirs = await stubs.commands.Answer(
        commands_pb2.AnswerRequest(session_id=theirs_call.uuid), metadata=OTHER_AUTH
    )
    their_watch = stubs.operations.WatchOperation(
        operations_pb2.WatchOperationRequest(operation_id=theirs.operation_id), metadata=OTHER_AUTH
    )
    assert await _status(their_watch) == "in_progress"

    # A client that goes away frees its place (the server learns it asynchronously).
    watches[0].cancel()

    async def reopened() -> Any:
        while True:
            again = stubs.operations.WatchOperation(request, metadata=DEMO_AUTH)
            try:
                await again.read()
                return again
            except grpc.aio.AioRpcError as exc:
                if exc.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise

    again = await asyncio.wait_for(reopened(), 5)
    for call_ in (again, watches[1], their_watch):
        call_.cancel()
