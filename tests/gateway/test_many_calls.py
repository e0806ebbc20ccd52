"""Many concurrent calls: each answered and hung up, nothing lost, nothing mixed up."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from callcontrol.config import EslConfig, GatewayConfig, OperationsConfig
from callcontrol.events import (
    CallAnswered,
    CallHangup,
    CallInitiated,
    CommandResult,
    LifecycleEvent,
    Subscription,
)
from callcontrol.gateway import Gateway
from callcontrol.simulator import FreeSwitchSimulator
from callcontrol.v1 import commands_pb2, operations_pb2
from tests.conftest import DEMO_AUTH, Stubs, make_config

CALLS = 200


@pytest.fixture
def config() -> GatewayConfig:
    # This is about nothing lost or mixed up with many calls at once, not about the
    # deadlines: on a machine busy with other work 200 set-ups and answers at once can
    # take longer than the production deadlines, which other tests cover.
    return make_config(
        esl=EslConfig(listen=make_config().esl.listen, reply_timeout_ms=15000),
        operations=OperationsConfig(timeout_ms=15000),
    )


async def test_200_concurrent_calls_are_each_answered_and_hung_up(
    gateway: Gateway, simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> None:
    calls = await asyncio.gather(*(simulator.place_call(caller_number=str(n)) for n in range(CALLS)))
    ids = {c.uuid for c in calls}

    async def collect(kind: type, count: int) -> list[LifecycleEvent]:
        got: list[LifecycleEvent] = []
        while len(got) < count:
            event = await asyncio.wait_for(events.get(), 20)
            got.append(event)
        return got

    initiated = await collect(CallInitiated, CALLS)
    assert {e.session_id for e in initiated} == ids

    async def answer_then_hangup(session_id: str) -> None:
        answer = await stubs.commands.Answer(
            commands_pb2.AnswerRequest(session_id=session_id), metadata=DEMO_AUTH
        )
        watch = stubs.operations.WatchOperation(
            operations_pb2.WatchOperationRequest(operation_id=answer.operation_id), metadata=DEMO_AUTH
        )
        assert [op.status async for op in watch][-1] == "succeeded"
        await stubs.commands.Hangup(
            commands_pb2.HangupRequest(session_id=session_id, cause="NORMAL_CLEARING"), metadata=DEMO_AUTH
        )

    await asyncio.gather(*(answer_then_hangup(s) for s in ids))
    # answer: call.answered + command.result; hangup: command.result + call.hangup
    rest = await collect(object, CALLS * 4)
    kinds = Counter((type(e).__name__, e.session_id) for e in rest)
    for session_id in ids:
        assert kinds[("CallAnswered", session_id)] == 1
        assert kinds[("CommandResult", session_id)] == 2
        assert kinds[("CallHangup", session_id)] == 1
    results = [e for e in rest if isinstance(e, CommandResult)]
    assert Counter(e.status for e in results) == {"succeeded": 2 * CALLS}
    hangups = [e for e in rest if isinstance(e, CallHangup)]
    assert all(h.cause == "NORMAL_CLEARING" for h in hangups)
    assert not [e for e in rest if isinstance(e, CallAnswered) and e.session_id not in ids]
    await asyncio.gather(*(c.wait_closed(timeout=20) for c in calls))
    assert len(gateway.control.sessions) == 0
