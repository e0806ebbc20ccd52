"""Real replica processes (``python -m callcontrol``, each with its own Envoy) on one redis-server."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import grpc

from callcontrol import die_with_parent
from callcontrol.config import DEMO_API_KEY, DEMO_APP_ID
from tests.conftest import Stubs
from tests.webhooks.conftest import SECRET_A

ROOT = Path(__file__).resolve().parents[2]
_GRPC = re.compile(rb"gRPC listening on 127\.0\.0\.1:(\d+)")
_ESL = re.compile(rb"outbound Event Socket listening on 127\.0\.0\.1:(\d+)")
_REST = re.compile(rb"envoy serving REST on (http://\S+) ")
T = TypeVar("T")


class ReplicaProcess:
    def __init__(
        self, name: str, proc: asyncio.subprocess.Process, grpc_port: int, esl_port: int, rest_url: str
    ) -> None:
        self.name = name
        self.proc = proc
        self.grpc = f"127.0.0.1:{grpc_port}"
        self.esl = ("127.0.0.1", esl_port)
        self.rest_url = rest_url  # this replica's own Envoy
        self.channel = grpc.aio.insecure_channel(self.grpc)
        self.stubs = Stubs(self.channel)

    async def stop(self) -> None:
        await self.channel.close()
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.proc.wait(), 30)


async def start_replica(tmp_path: Path, name: str, redis_url: str, webhook_url: str = "") -> ReplicaProcess:
    """A replica with its Envoy, once its gRPC, ESL and REST ports are logged."""
    config = tmp_path / f"{name}.toml"
    config.write_text(
        '[grpc]\nlisten = "127.0.0.1:0"\n[esl]\nlisten = "127.0.0.1:0"\n'
        '[metrics]\nlisten = "off"\n[rest]\nlisten = "127.0.0.1:0"\nadmin = "127.0.0.1:0"\n'
        f'[webhooks]\noutbox_path = "{tmp_path / name}-outbox.db"\n'
        f'[cluster]\nredis_url = "{redis_url}"\nreplica_id = "{name}"\nheartbeat_ms = 200\nexpiry_ms = 1000\n'
        f'[[applications]]\nid = "{DEMO_APP_ID}"\napi_key = "{DEMO_API_KEY}"\n'
        + (f'webhook_url = "{webhook_url}"\nwebhook_secrets = ["{SECRET_A}"]\n' if webhook_url else "")
    )
    log = tmp_path / f"{name}.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "server")}
    with log.open("ab") as stderr:
        proc = await asyncio.create_subprocess_exec(
            *die_with_parent.wrap([sys.executable, "-m", "callcontrol", "--config", str(config)]),
            cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip

    async def ready() -> tuple[int, int, str]:
        while True:
            text = await asyncio.to_thread(log.read_bytes)
            grpc_port, esl_port, rest = _GRPC.search(text), _ESL.search(text), _REST.search(text)
            if grpc_port and esl_port and rest:
                return int(grpc_port[1]), int(esl_port[1]), rest[1].decode()
            assert proc.returncode is None, (await asyncio.to_thread(log.read_text))[-2000:]
            await asyncio.sleep(0.05)  # polling the child's log: nothing else says it is up

    try:
        grpc_port, esl_port, rest_url = await asyncio.wait_for(ready(), 60)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    return ReplicaProcess(name, proc, grpc_port, esl_port, rest_url)


StartReplica = Callable[..., Awaitable[ReplicaProcess]]


@asynccontextmanager
async def replica_group() -> AsyncIterator[StartReplica]:
    """``start_replica`` for the block; every replica it started is stopped at the end."""
    started: list[ReplicaProcess] = []

    async def start(*args: object, **kwargs: object) -> ReplicaProcess:
        replica = await start_replica(*args, **kwargs)  # type: ignore[arg-type]
        started.append(replica)
        return replica

    try:
        yield start
    finally:
        for replica in started:
            await replica.stop()


async def retry_grpc(
    request: Callable[[], Awaitable[T]],
    code: grpc.StatusCode,
    timeout: float = 10.0,  # noqa: ASYNC109
) -> T:
    """A client's retry while a request fails with ``code`` (an owner not yet adopted, say)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await request()
        except grpc.aio.AioRpcError as exc:
            if exc.code() is not code or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.05)  # a client's retry
