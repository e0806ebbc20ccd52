"""Headline: real replica processes (``python -m callcontrol``) sharing a real redis-server.

kill -9 of a replica holding answered calls: FreeSWITCH (the simulator) runs the
dialplan's second ``socket``, a surviving replica adopts each call with its state,
and commands work again through any replica. The failover time is printed.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from callcontrol.simulator import FreeSwitchSimulator
from callcontrol.v1 import commands_pb2, operations_pb2, sessions_pb2
from tests.cluster.replicas import ReplicaProcess, replica_group, retry_grpc
from tests.conftest import DEMO_AUTH
from tests.redis_server import RedisServer


@pytest.fixture
async def replicas(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[list[ReplicaProcess]]:
    async with replica_group() as start:
        yield [await start(tmp_path, name, redis_server.url) for name in ("a", "b", "c")]


async def test_kill_9_of_a_replica_its_answered_calls_are_adopted_and_commands_work(
    replicas: list[ReplicaProcess],
) -> None:
    a, b, c = replicas
    sim = FreeSwitchSimulator(*a.esl)
    try:
        calls = [await sim.place_call(gateway=a.esl, next_sockets=[b.esl]) for _ in range(3)]
        for call in calls:
            # Known to the cluster once a has recorded it (before its call.initiated).
            await retry_grpc(
                lambda uuid=call.uuid: c.stubs.sessions.GetSession(  # type: ignore[misc]
                    sessions_pb2.GetSessionRequest(session_id=uuid), metadata=DEMO_AUTH
                ),
                grpc.StatusCode.NOT_FOUND,
            )
            # A command on every replica reaches the owner (a): answer through c.
            await c.stubs.commands.Answer(
                commands_pb2.AnswerRequest(session_id=call.uuid), metadata=DEMO_AUTH
            )
        await asyncio.gather(*(asyncio.wait_for(call.answered.wait(), 10) for call in calls))
        before = {
            call.uuid: await b.stubs.sessions.GetSession(
                sessions_pb2.GetSessionRequest(session_id=call.uuid), metadata=DEMO_AUTH
            )
            for call in calls
        }

        # One more call whose answer is in progress when its replica dies.
        pending_call = await sim.place_call(gateway=a.esl, next_sockets=[b.esl], answer_completes=False)
        await retry_grpc(
            lambda: c.stubs.sessions.GetSession(
                sessions_pb2.GetSessionRequest(session_id=pending_call.uuid), metadata=DEMO_AUTH
            ),
            grpc.StatusCode.NOT_FOUND,
        )
        pending = await c.stubs.commands.Answer(
            commands_pb2.AnswerRequest(session_id=pending_call.uuid), metadata=DEMO_AUTH
        )
        assert pending.status == "in_progress"

        killed = time.monotonic()
        a.proc.send_signal(signal.SIGKILL)
        assert await a.proc.wait() == -signal.SIGKILL
        await asyncio.gather(*(call.wait_connections(2, timeout=10) for call in calls))
        for call in calls:
            # Until b has adopted it, a read is UNAVAILABLE (the owner is gone): clients retry.
            after = await retry_grpc(
                lambda uuid=call.uuid: c.stubs.sessions.GetSession(  # type: ignore[misc]
                    sessions_pb2.GetSessionRequest(session_id=uuid), metadata=DEMO_AUTH
                ),
                grpc.StatusCode.UNAVAILABLE,
            )
            assert (after.state, after.created_at, after.answered_at) == (
                "answered",
                before[call.uuid].created_at,
                before[call.uuid].answered_at,
            )
        # Commands work again, through another replica: the adopter sends them.
        for call in calls:
            envelope = await c.stubs.commands.Hangup(
                commands_pb2.HangupRequest(session_id=call.uuid), metadata=DEMO_AUTH
            )
            assert envelope.status == "in_progress"
        failover = time.monotonic() - killed
        # The answer left in progress by a ended failed, with the reason, wherever asked.
        await pending_call.wait_connections(2)
        lost = await retry_grpc(
            lambda: c.stubs.operations.GetOperation(
                operations_pb2.GetOperationRequest(operation_id=pending.operation_id), metadata=DEMO_AUTH
            ),
            grpc.StatusCode.UNAVAILABLE,
        )
        assert (lost.status, lost.error.reason) == ("failed", "replica_lost")
        await asyncio.gather(*(asyncio.wait_for(call.hung_up.wait(), 10) for call in calls))
        print(
            f"\nfailover of {len(calls)} answered calls: {failover * 1000:.0f} ms (kill -9 → commands work)"
        )
        for call in calls:
            assert not call.returned_to_dialplan.is_set()
            assert call.connections == [a.esl, b.esl]
            hangups = [x for x in call.commands if x.headers.get("call-command") == "hangup"]
            assert len(hangups) == 1
    finally:
        await sim.close()
