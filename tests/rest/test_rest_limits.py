"""Request limits through the real Envoy: one limiter, in the server, after authentication.

Clients bind distinct loopback source addresses (127.0.0.x) so Envoy sees them as
different hosts; the server must key failed authentications on the address Envoy
observed, not on Envoy's own (every REST request reaches the server from it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from typing import Any

import aiohttp
import grpc
import pytest

from callcontrol.config import DEMO_APP_ID, GatewayConfig, LimitsConfig
from callcontrol.v1 import sessions_pb2
from tests.conftest import DEMO_AUTH, OTHER_API_KEY, OTHER_APP_ID, Stubs, make_config
from tests.rest.conftest import RestClient, new_uuid
from tests.rest.test_rest_errors import GRPC_RESOURCE_EXHAUSTED, assert_error, detail

RATE = 5
WRONG_KEY = {"X-App-ID": DEMO_APP_ID, "X-API-Key": "not-the-key-0000"}
OTHER_HEADERS = {"X-App-ID": OTHER_APP_ID, "X-API-Key": OTHER_API_KEY}
ClientAt = Callable[[str], AbstractAsyncContextManager[RestClient]]


def limited_config(rate: int = 0, auth_failures: int = 0) -> GatewayConfig:
    return replace(
        make_config(), limits=LimitsConfig(rate_limit_per_s=rate, auth_failures_per_minute=auth_failures)
    )


@pytest.fixture
def client_at(envoy: Any) -> ClientAt:
    """A REST client whose connections come from the given loopback address."""

    @asynccontextmanager
    async def open_client(source: str) -> AsyncIterator[RestClient]:
        connector = aiohttp.TCPConnector(local_addr=(source, 0))
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=30)
        ) as session:
            yield RestClient(session, envoy.rest_url)

    return open_client


@pytest.mark.parametrize("config", [limited_config(rate=RATE)])
async def test_a_wrong_key_flood_naming_an_application_does_not_spend_its_budget(
    client_at: ClientAt, config: GatewayConfig
) -> None:
    async with client_at("127.0.0.2") as attacker, client_at("127.0.0.1") as app:
        flood = [await attacker.get("/api/v1/sessions", headers=WRONG_KEY) for _ in range(4 * RATE)]
        assert {r.status for r in flood} == {401}

        # Envoy's old buckets were keyed on the raw X-App-ID: these were 429.
        replies = [await app.get("/api/v1/sessions") for _ in range(RATE)]

    assert [r.status for r in replies] == [200] * RATE


@pytest.mark.parametrize("config", [limited_config(rate=RATE)])
async def test_rest_and_grpc_spend_one_budget_per_application_and_group(
    client_at: ClientAt, stubs: Stubs, config: GatewayConfig
) -> None:
    async with client_at("127.0.0.1") as app:
        for _ in range(RATE - 1):
            await stubs.sessions.ListSessions(sessions_pb2.ListSessionsRequest(), metadata=DEMO_AUTH)
        replies = [await app.get("/api/v1/sessions") for _ in range(3)]
        operations = await app.get(f"/api/v1/operations/{new_uuid()}")
        other_app = await app.get("/api/v1/sessions", headers=OTHER_HEADERS)

    # The bucket (RATE, refilling at RATE/s) had one token left for REST, maybe a
    # second one refilled meanwhile; a third REST call in a row finds it empty.
    assert replies[0].status == 200
    assert replies[-1].status == 429
    error = assert_error(replies[-1], 429, GRPC_RESOURCE_EXHAUSTED)
    assert detail(error, "ErrorInfo")["reason"] == "RATE_LIMITED"
    assert replies[-1].headers["retry-after"] == "1"
    # Another group and another application have budgets of their own.
    assert operations.status == 404
    assert other_app.status == 200


@pytest.mark.parametrize("config", [limited_config(auth_failures=10)])
async def test_failed_authentication_is_limited_per_client_address(
    client_at: ClientAt, config: GatewayConfig
) -> None:
    async with client_at("127.0.0.3") as guesser, client_at("127.0.0.1") as app:
        # A client-supplied X-Forwarded-For must not buy a fresh allowance.
        spoofed = {**WRONG_KEY, "X-Forwarded-For": "203.0.113.9"}
        guesses = [await guesser.get("/api/v1/sessions", headers=spoofed) for _ in range(30)]
        right_key_from_guesser = await guesser.get("/api/v1/sessions")
        from_elsewhere = await app.get("/api/v1/sessions")

    statuses = [r.status for r in guesses]
    assert statuses[:10] == [401] * 10
    assert set(statuses[10:]) == {429}
    error = assert_error(guesses[-1], 429, GRPC_RESOURCE_EXHAUSTED)
    assert "failed authentications" in error["message"]
    # 10 per minute: the wait for the next one is seconds, told by the server.
    assert int(guesses[-1].headers["retry-after"]) > 1
    # Over its allowance the address learns nothing, not even from the right key.
    assert right_key_from_guesser.status == 429
    # Every REST request reaches the server from Envoy: another client is unaffected.
    assert from_elsewhere.status == 200


@pytest.mark.parametrize("config", [limited_config(auth_failures=3)])
async def test_direct_grpc_failed_authentication_is_limited_per_peer(
    stubs: Stubs, config: GatewayConfig
) -> None:
    wrong = (("x-app-id", DEMO_APP_ID), ("x-api-key", "not-the-key-0000"))
    codes = []
    for _ in range(5):
        try:
            await stubs.sessions.ListSessions(sessions_pb2.ListSessionsRequest(), metadata=wrong)
        except grpc.aio.AioRpcError as err:
            codes.append(err.code())

    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 3 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
