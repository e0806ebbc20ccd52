"""In-process replicas sharing one real redis-server (the headline tests run real processes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import grpc
import pytest

from callcontrol.config import ClusterConfig
from callcontrol.gateway import Gateway
from callcontrol.simulator import FreeSwitchSimulator
from tests.conftest import Stubs, make_config
from tests.redis_server import RedisServer

# Short, so a dead replica stops routing quickly in tests.
HEARTBEAT_MS, EXPIRY_MS = 100, 600


class Replica:
    def __init__(self, gateway: Gateway, channel: grpc.aio.Channel) -> None:
        self.gateway = gateway
        self.channel = channel
        self.stubs = Stubs(channel)

    @property
    def esl(self) -> tuple[str, int]:
        assert self.gateway.esl_address is not None
        return self.gateway.esl_address.host, self.gateway.esl_address.port


StartReplica = Callable[..., Awaitable[Replica]]


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Wait for a replica's own state that nothing announces (a heartbeat noticing, an adoption)."""

    async def reached() -> None:
        while True:
            if predicate():
                return
            await asyncio.sleep(0.02)  # polling: the state changes inside a replica's own tasks

    await asyncio.wait_for(reached(), timeout)


def cluster_config(url: str, replica_id: str, **overrides: object) -> ClusterConfig:
    return replace(
        ClusterConfig(redis_url=url, replica_id=replica_id, heartbeat_ms=HEARTBEAT_MS, expiry_ms=EXPIRY_MS),
        **overrides,  # type: ignore[arg-type]
    )


@pytest.fixture
async def start_replica(redis_server: RedisServer) -> AsyncIterator[StartReplica]:
    started: list[Replica] = []

    async def start(
        replica_id: str, *, heartbeat_ms: int = HEARTBEAT_MS, expiry_ms: int = EXPIRY_MS, **overrides: object
    ) -> Replica:
        cluster = cluster_config(redis_server.url, replica_id, heartbeat_ms=heartbeat_ms, expiry_ms=expiry_ms)
        gateway = Gateway(make_config(cluster=cluster, **overrides))
        await gateway.start()
        assert gateway.grpc_address is not None
        replica = Replica(gateway, grpc.aio.insecure_channel(str(gateway.grpc_address)))
        started.append(replica)
        return replica

    try:
        yield start
    finally:
        for replica in started:
            await replica.channel.close()
            await replica.gateway.shutdown(grace=0.2)


@pytest.fixture
async def switch() -> AsyncIterator[FreeSwitchSimulator]:
    """A simulated FreeSWITCH; each call says which replica its socket goes to."""
    sim = FreeSwitchSimulator("127.0.0.1", 1)
    try:
        yield sim
    finally:
        await sim.close()
