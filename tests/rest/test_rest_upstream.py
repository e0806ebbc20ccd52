"""What Envoy sends the gRPC server and how it treats its failures, seen from a scripted server.

The real gateway cannot be made to fail on cue, so these tests put Envoy in
front of a small grpc.aio server whose answers each test chooses, and which
records every call it receives.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from callcontrol.config import Address
from callcontrol.v1 import commands_pb2, commands_pb2_grpc, sessions_pb2, sessions_pb2_grpc
from tests.rest.conftest import DEMO_HEADERS, JSON_HEADERS, EnvoyFactory, RestClient, new_uuid


@dataclass
class Script:
    """The status every call is failed with (None: succeed), and what the server saw."""

    fail_with: grpc.StatusCode | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def serve(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        self.calls.append(
            {"method": method, "metadata": metadata, "time_remaining": context.time_remaining()}
        )
        if self.fail_with is not None:
            await context.abort(self.fail_with, f"scripted {self.fail_with.name}")


class _Commands(commands_pb2_grpc.SessionCommandsServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    async def Answer(
        self, request: commands_pb2.AnswerRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> commands_pb2.OperationEnvelope:
        return await self._command("Answer", context)

    async def Hangup(
        self, request: commands_pb2.HangupRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> commands_pb2.OperationEnvelope:
        return await self._command("Hangup", context)

    async def Disconnect(
        self, request: commands_pb2.DisconnectRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> commands_pb2.OperationEnvelope:
        return await self._command("Disconnect", context)

    async def _command(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any]
    ) -> commands_pb2.OperationEnvelope:
        await self.script.serve(method, context)
        return commands_pb2.OperationEnvelope(operation_id=new_uuid(), status="in_progress", timeout_ms=2000)


class _Sessions(sessions_pb2_grpc.SessionsServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    async def ListSessions(
        self, request: sessions_pb2.ListSessionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> sessions_pb2.ListSessionsResponse:
        await self.script.serve("ListSessions", context)
        return sessions_pb2.ListSessionsResponse()

    async def GetSession(
        self, request: sessions_pb2.GetSessionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> sessions_pb2.Session:
        await self.script.serve("GetSession", context)
        return sessions_pb2.Session(session_id=request.session_id)


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[Script, Address]]:
    script = Script()
    server = grpc.aio.server()
    commands_pb2_grpc.add_SessionCommandsServicer_to_server(_Commands(script), server)
    sessions_pb2_grpc.add_SessionsServicer_to_server(_Sessions(script), server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    try:
        yield script, Address("127.0.0.1", port)
    finally:
        await server.stop(0)


@pytest.fixture
async def scripted_rest(
    scripted: tuple[Script, Address], envoy_factory: EnvoyFactory, http: Any
) -> RestClient:
    envoy = await envoy_factory(scripted[1])
    return RestClient(http, envoy.rest_url)


async def test_headers_reach_the_server_as_metadata_with_a_deadline(
    scripted: tuple[Script, Address], scripted_rest: RestClient
) -> None:
    script, _ = scripted

    reply = await scripted_rest.get(
        "/api/v1/sessions", headers={**DEMO_HEADERS, "X-Request-ID": "trace-me-1"}
    )

    assert reply.status == 200
    [call] = script.calls
    assert call["metadata"]["x-app-id"] == DEMO_HEADERS["X-App-ID"]
    assert call["metadata"]["x-api-key"] == DEMO_HEADERS["X-API-Key"]
    assert call["metadata"]["x-request-id"] == "trace-me-1"
    assert 0 < call["time_remaining"] <= 10  # the route's grpc-timeout


async def test_a_command_the_server_fails_as_unavailable_is_sent_once(
    scripted: tuple[Script, Address], scripted_rest: RestClient
) -> None:
    script, _ = scripted
    script.fail_with = grpc.StatusCode.UNAVAILABLE

    reply = await scripted_rest.post(
        f"/api/v1/sessions/{new_uuid()}/commands/answer", headers=JSON_HEADERS, data="{}"
    )

    assert reply.status == 503
    assert reply.json()["code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    assert [c["method"] for c in script.calls] == ["Answer"]  # never retried: it might have run


async def test_a_read_the_server_fails_as_unavailable_is_retried(
    scripted: tuple[Script, Address], scripted_rest: RestClient
) -> None:
    script, _ = scripted
    script.fail_with = grpc.StatusCode.UNAVAILABLE

    reply = await scripted_rest.get("/api/v1/sessions")

    assert reply.status == 503
    assert [c["method"] for c in script.calls] == ["ListSessions"] * 3  # first try and two retries


async def test_resource_exhausted_from_the_server_is_429_with_retry_after(
    scripted: tuple[Script, Address], scripted_rest: RestClient
) -> None:
    script, _ = scripted
    script.fail_with = grpc.StatusCode.RESOURCE_EXHAUSTED

    reply = await scripted_rest.post(
        f"/api/v1/sessions/{new_uuid()}/commands/answer", headers=JSON_HEADERS, data="{}"
    )

    assert reply.status == 429
    assert reply.headers["retry-after"] == "1"
    body = reply.json()
    assert set(body) == {"code", "message", "details"}
    assert body["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert not {h for h in reply.headers if h.startswith("grpc-")}
