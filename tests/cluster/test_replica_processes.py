"""Headline: real replica processes (``python -m callcontrol``) sharing a real redis-server.

kill -9 of a replica holding answered calls: FreeSWITCH (the simulator) runs the
dialplan's second ``socket``, a surviving replica adopts each call with its state,
and commands work again through any replica. The failover time is printed.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from callcontrol.config import DEMO_API_KEY, DEMO_APP_ID
from callcontrol.simulator import FreeSwitchSimulator
from callcontrol.v1 import commands_pb2, operations_pb2, sessions_pb2
from tests.conftest import DEMO_AUTH, Stubs
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
_GRPC = re.compile(rb"gRPC listening on 127\.0\.0\.1:(\d+)")
_ESL = re.compile(rb"outbound Event Socket listening on 127\.0\.0\.1:(\d+)")
T = TypeVar("T")


class ReplicaProcess:
    def __init__(self, name: str, proc: asyncio.subprocess.Process, grpc_port: int, esl_port: int) -> None:
        self.name = name
        self.proc = proc
        self.grpc = f"127.0.0.1:{grpc_port}"
        self.esl = ("127.0.0.1", esl_port)
        self.channel = grpc.aio.insecure_channel(self.grpc)
        self.stubs = Stubs(self.channel)


async def _start(tmp_path: Path, name: str, redis_url: str) -> ReplicaProcess:
    config = tmp_path / f"{name}.toml"
    config.write_text(
        '[grpc]\nlisten = "127.0.0.1:0"\n[esl]\nlisten = "127.0.0.1:0"\n'
        '[metrics]\nlisten = "off"\n[rest]\nlisten = "127.0.0.1:0"\nadmin = "127.0.0.1:0"\n'
        f'[webhooks]\noutbox_path = "{tmp_path / name}-outbox.db"\n'
        f'[cluster]\nredis_url = "{redis_url}"\nreplica_id = "{name}"\nheartbeat_ms = 200\nexpiry_ms = 1000\n'
        f'[[applications]]\nid = "{DEMO_APP_ID}"\napi_key = "{DEMO_API_KEY}"\n'
    )
    log = tmp_path / f"{name}.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "server")}
    with log.open("ab") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "callcontrol", "--config", str(config),
            cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip

    async def ready() -> tuple[int, int]:
        while True:
            text = await asyncio.to_thread(log.read_bytes)
            grpc_port, esl_port = _GRPC.search(text), _ESL.search(text)
            if grpc_port and esl_port:
                return int(grpc_port[1]), int(esl_port[1])
            assert proc.returncode is None, (await asyncio.to_thread(log.read_text))[-2000:]
            await asyncio.sleep(0.05)  # polling the child's log: nothing else says it is up

    grpc_port, esl_port = await asyncio.wait_for(ready(), 60)
    return ReplicaProcess(name, proc, grpc_port, esl_port)


@pytest.fixture
async def replicas(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[list[ReplicaProcess]]:
    started = [await _start(tmp_path, name, redis_server.url) for name in ("a", "b", "c")]
    try:
        yield started
    finally:
        for replica in started:
            await replica.channel.close()
            if replica.proc.returncode is None:
                replica.proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(replica.proc.wait(), 30)


async def test_kill_9_of_a_replica_its_answered_calls_are_adopted_and_commands_work(
    replicas: list[ReplicaProcess],
) -> None:
    a, b, c = replicas
    sim = FreeSwitchSimulator(*a.esl)
    try:
        calls = [await sim.place_call(gateway=a.esl, next_sockets=[b.esl]) for _ in range(3)]
        for call in calls:
            # Known to the cluster once a has recorded it (before its call.initiated).
            await _retry(
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
        await _retry(
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
            after = await _retry(
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
        lost = await _retry(
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


async def _retry(
    request: Callable[[], Awaitable[T]],
    code: grpc.StatusCode,
    timeout: float = 10.0,  # noqa: ASYNC109
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await request()
        except grpc.aio.AioRpcError as exc:
            if exc.code() is not code or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.05)  # a client's retry
