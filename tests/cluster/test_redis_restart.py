"""Redis restarted under running replicas (AOF keeps its data): routing recovers by itself, says so once."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import grpc
import pytest

from callcontrol.events import CommandResult
from callcontrol.simulator import FreeSwitchSimulator
from callcontrol.v1 import commands_pb2, operations_pb2, sessions_pb2
from tests.cluster.conftest import Replica, StartReplica, until
from tests.cluster.test_routing import _call_on, _sendmsgs
from tests.conftest import DEMO_AUTH, next_event
from tests.redis_server import RedisServer


async def _until_routed(call: Any, request: object, within: float = 10.0) -> Any:
    """The first answer once routing works again; refusals before that must be UNAVAILABLE."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            return await call(request, metadata=DEMO_AUTH)
        except grpc.aio.AioRpcError as exc:
            refused = exc
        assert refused.code() is grpc.StatusCode.UNAVAILABLE, refused
        assert asyncio.get_running_loop().time() < deadline, f"routing never recovered: {refused.details()}"
        await asyncio.sleep(0.05)  # retrying as a client would: nothing announces the recovery


@pytest.mark.parametrize("kill", [False, True], ids=["restart", "kill-9"])
async def test_redis_restarted_under_running_replicas_routing_recovers_and_says_so_once(
    start_replica: StartReplica,
    switch: FreeSwitchSimulator,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
    kill: bool,
) -> None:
    caplog.set_level(logging.INFO)
    r1, r2 = await start_replica("r1"), await start_replica("r2")
    held = await _call_on(switch, r1)
    with r1.gateway.events.subscribe() as events:
        answered = await r2.stubs.commands.Answer(
            commands_pb2.AnswerRequest(session_id=held.uuid), metadata=DEMO_AUTH
        )
        await next_event(events, CommandResult, held.uuid)
    caplog.clear()

    redis_server.stop(kill=kill)
    await asyncio.sleep(0.5)  # Redis away for a few heartbeats (the restart of a real host)
    redis_server.start()

    get = r2.stubs.sessions.GetSession
    found = await _until_routed(get, sessions_pb2.GetSessionRequest(session_id=held.uuid))
    assert found.state == "answered"
    op = await _until_routed(
        r2.stubs.operations.GetOperation,
        operations_pb2.GetOperationRequest(operation_id=answered.operation_id),
    )
    assert op.status == "succeeded"
    page = await r2.stubs.sessions.ListSessions(sessions_pb2.ListSessionsRequest(), metadata=DEMO_AUTH)
    assert held.uuid in {s.session_id for s in page.sessions}
    with r1.gateway.events.subscribe() as events:
        envelope = await r2.stubs.commands.Hangup(
            commands_pb2.HangupRequest(session_id=held.uuid), metadata=DEMO_AUTH
        )
        result = await next_event(events, CommandResult, held.uuid)
    assert (result.operation_id, result.status) == (envelope.operation_id, "succeeded")
    assert len(_sendmsgs(held, "hangup")) == 1

    cluster_lines = [r for r in caplog.records if r.name.startswith("callcontrol.cluster")]
    text = "\n".join(f"{r.levelname} {r.name}: {r.getMessage()}" for r in cluster_lines)
    lost = [r for r in cluster_lines if "cluster store (Redis) lost" in r.getMessage()]
    back = [r for r in cluster_lines if "cluster store (Redis) is back" in r.getMessage()]
    assert len(lost) == 2, text  # one per replica
    assert len(back) == 2, text
    assert len(cluster_lines) <= 6, text  # no flood


@pytest.mark.parametrize("data", ["kept", "lost"])
async def test_a_redis_restart_between_two_heartbeats_is_noticed_and_the_directory_written_back(
    start_replica: StartReplica,
    switch: FreeSwitchSimulator,
    redis_server: RedisServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    data: str,
) -> None:
    caplog.set_level(logging.INFO, logger="callcontrol.cluster")
    # A heartbeat long enough for Redis to restart between two beats.
    r1, r2 = [await start_replica(name, heartbeat_ms=1500, expiry_ms=6000) for name in ("r1", "r2")]
    held = await _call_on(switch, r1)
    caplog.clear()

    redis_server.stop(kill=True)
    # "lost": the last writes lost with it (fsync everysec, a failover); here, everything.
    restarted = redis_server if data == "kept" else RedisServer(tmp_path / "fresh", port=redis_server.port)
    restarted.start()
    try:
        await _recovered(r1, r2, held.uuid, caplog)
    finally:
        restarted.stop()


async def _recovered(r1: Replica, r2: Replica, session_id: str, caplog: pytest.LogCaptureFixture) -> None:
    """Each replica says once that Redis restarted; then r2 routes to r1's call again."""

    def said_so() -> list[str]:
        return [r.getMessage() for r in caplog.records if "(it restarted)" in r.getMessage()]

    await until(lambda: len(said_so()) == 2)
    assert {m.split("replica ")[1].split(" ")[0] for m in said_so()} == {"r1", "r2"}
    found = await _until_routed(
        r2.stubs.sessions.GetSession, sessions_pb2.GetSessionRequest(session_id=session_id)
    )
    assert found.session_id == session_id
    with r1.gateway.events.subscribe() as events:
        envelope = await r2.stubs.commands.Hangup(
            commands_pb2.HangupRequest(session_id=session_id), metadata=DEMO_AUTH
        )
        result = await next_event(events, CommandResult, session_id)
    assert (result.operation_id, result.status) == (envelope.operation_id, "succeeded")
    assert len(said_so()) == 2  # once per replica, not once per heartbeat
