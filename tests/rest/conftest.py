"""REST test kit: a real Envoy in front of the real gateway, and an HTTP client.

Every Envoy binds port 0 (listener and admin) in its own run directory with hot
restart disabled, so tests run in parallel without colliding. Waits poll
observable state against a deadline; nothing sleeps to win a race.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from callcontrol.config import DEMO_API_KEY, DEMO_APP_ID, Address, RestConfig
from callcontrol.rest import EnvoyProcess

DEMO_HEADERS = {"X-App-ID": DEMO_APP_ID, "X-API-Key": DEMO_API_KEY}
JSON_HEADERS = {**DEMO_HEADERS, "Content-Type": "application/json"}
# Fast health checks: /healthz follows the gRPC server within a fraction of a second.
HEALTH_CHECK_INTERVAL_MS = 200
TERMINAL = {"succeeded", "failed", "timed_out"}


@dataclass(frozen=True, slots=True)
class Reply:
    """One HTTP response, fully read."""

    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error_reason(self) -> str | None:
        """The ErrorInfo reason of an error body, if any."""
        try:
            details = self.json().get("details", [])
        except (ValueError, AttributeError):
            return None
        for detail in details:
            if detail.get("@type", "").endswith("google.rpc.ErrorInfo"):
                return str(detail.get("reason"))
        return None


class RestClient:
    """aiohttp against one Envoy; every response is read whole and kept simple."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str) -> None:
        self.http = http
        self.base_url = base_url

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        json_body: Any = None,
        data: bytes | str | None = None,
    ) -> Reply:
        async with self.http.request(
            method,
            self.base_url + path,
            headers=DEMO_HEADERS if headers is None else headers,
            json=json_body,
            data=data,
        ) as response:
            body = await response.read()
            return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, body)

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("POST", path, **kwargs)


async def eventually(probe: Callable[[], Awaitable[bool]], what: str, within: float = 10.0) -> None:
    """Poll ``probe`` until it holds; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await probe():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)


def rest_config() -> RestConfig:
    return RestConfig(listen=Address("127.0.0.1", 0), admin=Address("127.0.0.1", 0))


EnvoyFactory = Callable[..., Awaitable[EnvoyProcess]]


@pytest.fixture
async def envoy_factory(tmp_path: Path) -> AsyncIterator[EnvoyFactory]:
    """Start Envoys (each in its own run dir) and stop every one at teardown."""
    started: list[EnvoyProcess] = []

    async def start(grpc_address: Address, *, healthy: bool = True) -> EnvoyProcess:
        run_dir = tmp_path / f"envoy-{len(started)}"
        envoy = EnvoyProcess(
            rest_config(),
            grpc_address,
            run_dir,
            access_log_path=run_dir / "access.log",
            concurrency=1,
            health_check_interval_ms=HEALTH_CHECK_INTERVAL_MS,
        )
        started.append(envoy)
        await envoy.start()
        if healthy:
            await envoy.wait_healthy(timeout=15)
        return envoy

    try:
        yield start
    finally:
        for envoy in started:
            await envoy.stop()


@pytest.fixture
async def envoy(gateway: Any, envoy_factory: EnvoyFactory) -> EnvoyProcess:
    """Envoy in front of the ``gateway`` fixture, healthy."""
    return await envoy_factory(gateway.grpc_address)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture
def rest(envoy: EnvoyProcess, http: aiohttp.ClientSession) -> RestClient:
    return RestClient(http, envoy.rest_url)


@pytest.fixture
def refused_port() -> Iterator[Address]:
    """A loopback port that refuses connections: bound (so nobody else takes it), not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield Address("127.0.0.1", sock.getsockname()[1])


async def place_call(simulator: Any, rest: RestClient, **kwargs: Any) -> str:
    """A simulated call, returned once the REST API shows its session."""
    call = await simulator.place_call(app_id=DEMO_APP_ID, **kwargs)
    session_id = str(call.uuid)

    async def visible() -> bool:
        return (await rest.get(f"/api/v1/sessions/{session_id}")).status == 200

    await eventually(visible, f"session {session_id} to appear over REST")
    return session_id


def new_uuid() -> str:
    return str(uuid.uuid4())
