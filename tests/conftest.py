"""Shared fixtures: a real gateway on loopback, the FreeSWITCH simulator, gRPC stubs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from callcontrol.config import (
    DEMO_API_KEY,
    DEMO_APP_ID,
    Address,
    Application,
    EslConfig,
    GatewayConfig,
    LimitsConfig,
    OperationsConfig,
    WebhookConfig,
    demo_application,
    hash_api_key,
)
from callcontrol.events import LifecycleEvent, Subscription
from callcontrol.gateway import Gateway
from callcontrol.simulator import FreeSwitchSimulator
from callcontrol.v1 import commands_pb2_grpc, operations_pb2_grpc, sessions_pb2_grpc
from tests.redis_server import RedisServer
from tests.webhooks.conftest import Receiver

OTHER_APP_ID = "other-app"
OTHER_API_KEY = "other-key-0123456789"
DEMO_AUTH = (("x-app-id", DEMO_APP_ID), ("x-api-key", DEMO_API_KEY))
OTHER_AUTH = (("x-app-id", OTHER_APP_ID), ("x-api-key", OTHER_API_KEY))

E = TypeVar("E", bound=LifecycleEvent)


def make_config(**overrides: Any) -> GatewayConfig:
    base = GatewayConfig(
        grpc_listen=Address("127.0.0.1", 0),
        # Tests that want limits set them (tests/gateway/test_limits.py).
        limits=LimitsConfig(rate_limit_per_s=0, auth_failures_per_minute=0),
        esl=EslConfig(listen=Address("127.0.0.1", 0), reply_timeout_ms=2000),
        operations=OperationsConfig(timeout_ms=2000),
        webhooks=WebhookConfig(outbox_path=":memory:"),
        metrics_listen=Address("127.0.0.1", 0),
        applications=(
            demo_application(),
            Application(OTHER_APP_ID, hash_api_key(OTHER_API_KEY)),
        ),
    )
    return replace(base, **overrides)


@pytest.fixture
def config() -> GatewayConfig:
    return make_config()


@pytest.fixture
async def gateway(config: GatewayConfig) -> AsyncIterator[Gateway]:
    gw = Gateway(config)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.shutdown(grace=0.5)


@pytest.fixture
async def simulator(gateway: Gateway) -> AsyncIterator[FreeSwitchSimulator]:
    assert gateway.esl_address is not None
    sim = FreeSwitchSimulator(gateway.esl_address.host, gateway.esl_address.port)
    try:
        yield sim
    finally:
        await sim.close()


@pytest.fixture
async def channel(gateway: Gateway) -> AsyncIterator[grpc.aio.Channel]:
    assert gateway.grpc_address is not None
    async with grpc.aio.insecure_channel(str(gateway.grpc_address)) as ch:
        yield ch


class Stubs:
    def __init__(self, ch: grpc.aio.Channel) -> None:
        self.commands = commands_pb2_grpc.SessionCommandsStub(ch)
        self.operations = operations_pb2_grpc.OperationsStub(ch)
        self.sessions = sessions_pb2_grpc.SessionsStub(ch)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A real webhook receiver on 127.0.0.1 (tests/webhooks/conftest.py has its kit)."""
    r = Receiver()
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


@pytest.fixture
def stubs(channel: grpc.aio.Channel) -> Stubs:
    return Stubs(channel)


@pytest.fixture
def events(gateway: Gateway) -> Subscription:
    return gateway.events.subscribe()


async def next_event(
    sub: Subscription,
    kind: type[E],
    session_id: str | None = None,
    timeout: float = 5.0,  # noqa: ASYNC109 - one deadline for the whole search
    where: Callable[[E], bool] | None = None,
) -> E:
    """The next event of that kind (and session), skipping others; fails after ``timeout``."""

    async def find() -> E:
        while True:
            event = await sub.get()
            if (
                isinstance(event, kind)
                and (session_id is None or event.session_id == session_id)
                and (where is None or where(event))
            ):
                return event

    return await asyncio.wait_for(find(), timeout)


def drain(sub: Subscription) -> list[LifecycleEvent]:
    """Every event already queued, without waiting for more."""
    out: list[LifecycleEvent] = []
    while (event := sub.get_nowait()) is not None:
        out.append(event)
    return out


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, stopped after the test."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()
