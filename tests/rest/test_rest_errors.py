"""Every error over REST: the right HTTP status and the one JSON shape {code, message, details}.

Errors come from two places, the gRPC server (converted by the transcoder) and
Envoy itself (local replies rewritten by local_reply_config); a client must not
be able to tell them apart by shape.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from callcontrol.rest import EnvoyProcess
from callcontrol.rest.envoy_routes import MAX_REQUEST_BODY_BYTES
from tests.rest.conftest import (
    DEMO_HEADERS,
    JSON_HEADERS,
    Reply,
    RestClient,
    eventually,
    new_uuid,
    place_call,
)

GRPC_INVALID_ARGUMENT, GRPC_NOT_FOUND, GRPC_FAILED_PRECONDITION = 3, 5, 9
GRPC_RESOURCE_EXHAUSTED, GRPC_UNAVAILABLE, GRPC_UNAUTHENTICATED = 8, 14, 16
GRPC_UNIMPLEMENTED = 12


def assert_error(reply: Reply, status: int, code: int) -> dict[str, Any]:
    """The status, and a body of exactly code (the gRPC code), message and details."""
    assert reply.status == status, reply.body
    assert reply.headers["content-type"].startswith("application/json")
    body = json.loads(reply.body)
    assert set(body) == {"code", "message", "details"}
    assert body["code"] == code
    assert isinstance(body["message"], str)
    assert isinstance(body["details"], list)
    assert all("@type" in detail for detail in body["details"])
    assert reply.headers["x-request-id"]
    return dict(body)


def detail(body: dict[str, Any], type_name: str) -> dict[str, Any]:
    [found] = [d for d in body["details"] if d["@type"] == f"type.googleapis.com/google.rpc.{type_name}"]
    return dict(found)


def violated_fields(body: dict[str, Any]) -> set[str]:
    return {v["field"] for v in detail(body, "BadRequest")["field_violations"]}


@pytest.mark.parametrize(
    ("command", "body", "field"),
    [
        ("hangup", '{"cause": "user_busy"}', "cause"),
        ("hangup", '{"cause": "' + "A" * 65 + '"}', "cause"),
        ("hangup", '{"cause": "USER_BUSY\\nhangup-cause: CALL_REJECTED"}', "cause"),
        ("answer", '{"command_uid": "' + "x" * 129 + '"}', "command_uid"),
        ("disconnect", '{"command_uid": "bad uid"}', "command_uid"),
    ],
)
async def test_an_invalid_field_is_400_naming_the_field(
    simulator: Any, rest: RestClient, command: str, body: str, field: str
) -> None:
    session_id = await place_call(simulator, rest)

    reply = await rest.post(
        f"/api/v1/sessions/{session_id}/commands/{command}", headers=JSON_HEADERS, data=body
    )

    error = assert_error(reply, 400, GRPC_INVALID_ARGUMENT)
    assert field in violated_fields(error)


@pytest.mark.parametrize("session_id", ["not-a-uuid", "6211875b2e874011b202de38598ef2ef", "a%2Fb"])
async def test_a_session_id_that_is_not_a_uuid_is_400_naming_session_id(
    rest: RestClient, session_id: str
) -> None:
    reply = await rest.post(f"/api/v1/sessions/{session_id}/commands/answer", headers=JSON_HEADERS, data="{}")

    assert "session_id" in violated_fields(assert_error(reply, 400, GRPC_INVALID_ARGUMENT))


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json"},
        {"X-App-ID": "demo-app", "Content-Type": "application/json"},
        {"X-App-ID": "demo-app", "X-API-Key": "wrong-key-123", "Content-Type": "application/json"},
        {"X-App-ID": "nobody", "X-API-Key": "demo-key-change-me", "Content-Type": "application/json"},
    ],
)
async def test_missing_or_wrong_credentials_are_401(rest: RestClient, headers: dict[str, str]) -> None:
    reply = await rest.post(f"/api/v1/sessions/{new_uuid()}/commands/answer", headers=headers, data="{}")

    assert_error(reply, 401, GRPC_UNAUTHENTICATED)


@pytest.mark.parametrize(
    ("method", "path", "resource"),
    [
        ("POST", "/api/v1/sessions/{id}/commands/answer", "session"),
        ("POST", "/api/v1/sessions/{id}/commands/hangup", "session"),
        ("GET", "/api/v1/sessions/{id}", "session"),
        ("GET", "/api/v1/operations/{id}", "operation"),
        ("GET", "/api/v1/operations/{id}/watch", "operation"),
    ],
)
async def test_an_unknown_session_or_operation_is_404_with_resource_info(
    rest: RestClient, method: str, path: str, resource: str
) -> None:
    unknown = new_uuid()

    reply = await rest.request(
        method, path.format(id=unknown), headers=JSON_HEADERS, data="{}" if method == "POST" else None
    )

    info = detail(assert_error(reply, 404, GRPC_NOT_FOUND), "ResourceInfo")
    assert info["resource_name"] == unknown
    assert resource in info["resource_type"]


async def test_a_command_on_a_disconnected_session_is_refused_not_accepted(
    simulator: Any, rest: RestClient
) -> None:
    session_id = await place_call(simulator, rest)
    disconnected = await rest.post(
        f"/api/v1/sessions/{session_id}/commands/disconnect", headers=JSON_HEADERS, data="{}"
    )
    assert disconnected.status == 202

    reply = await rest.post(f"/api/v1/sessions/{session_id}/commands/answer", headers=JSON_HEADERS, data="{}")

    # FAILED_PRECONDITION maps to 400; a session already gone from the registry is 404.
    assert reply.status in (400, 404), reply.body
    assert_error(reply, reply.status, GRPC_FAILED_PRECONDITION if reply.status == 400 else GRPC_NOT_FOUND)


@pytest.mark.parametrize(
    ("path", "body", "needle"),
    [
        ("/api/v1/sessions/{id}/commands/hangup", '{"cause": ', ""),
        ("/api/v1/sessions/{id}/commands/hangup", "[]", ""),
        ("/api/v1/sessions/{id}/commands/hangup", '{"cause": 17}', ""),
        (
            "/api/v1/sessions/{id}/commands/answer",
            '{"session_id": "00000000-0000-4000-8000-000000000000"}',
            "conflict",
        ),
    ],
)
async def test_a_body_envoy_cannot_transcode_is_400_in_the_same_shape(
    rest: RestClient, path: str, body: str, needle: str
) -> None:
    reply = await rest.post(path.format(id=new_uuid()), headers=JSON_HEADERS, data=body)

    error = assert_error(reply, 400, GRPC_INVALID_ARGUMENT)
    assert detail(error, "ErrorInfo")["reason"] == "INVALID_REQUEST"
    assert needle in error["message"]


async def test_an_unknown_query_parameter_is_400(rest: RestClient) -> None:
    reply = await rest.get("/api/v1/sessions?colour=blue")

    error = assert_error(reply, 400, GRPC_INVALID_ARGUMENT)
    assert "colour" in error["message"]


async def test_an_oversized_body_is_413(rest: RestClient) -> None:
    body = json.dumps({"command_uid": "x" * (MAX_REQUEST_BODY_BYTES + 1)})

    reply = await rest.post(f"/api/v1/sessions/{new_uuid()}/commands/answer", headers=JSON_HEADERS, data=body)

    error = assert_error(reply, 413, GRPC_INVALID_ARGUMENT)
    assert detail(error, "ErrorInfo")["reason"] == "BODY_TOO_LARGE"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/nothing-here"),
        ("GET", "/"),
        ("POST", "/callcontrol.v1.SessionCommands/Answer"),
        ("GET", "/api/v1/sessions/{id}/commands/nothing"),
    ],
)
async def test_an_unknown_route_is_404_in_the_same_shape(rest: RestClient, method: str, path: str) -> None:
    reply = await rest.request(method, path.format(id=new_uuid()), headers=JSON_HEADERS, data="{}")

    error = assert_error(reply, 404, GRPC_NOT_FOUND)
    assert detail(error, "ErrorInfo")["reason"] == "ROUTE_NOT_FOUND"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/api/v1/sessions/{id}", "GET"),
        ("GET", "/api/v1/sessions/{id}/commands/answer", "POST"),
        ("PUT", "/api/v1/operations/{id}", "GET"),
        ("PATCH", "/api/v1/sessions", "GET"),
        ("POST", "/openapi.json", "GET"),
    ],
)
async def test_a_method_a_route_does_not_serve_is_405_with_allow(
    rest: RestClient, method: str, path: str, allow: str
) -> None:
    # These were 404 ROUTE_NOT_FOUND, as if the path did not exist.
    reply = await rest.request(method, path.format(id=new_uuid()), headers=JSON_HEADERS, data="{}")

    error = assert_error(reply, 405, GRPC_UNIMPLEMENTED)
    assert detail(error, "ErrorInfo")["reason"] == "METHOD_NOT_ALLOWED"
    assert reply.headers["allow"] == allow


async def test_the_gateway_down_is_503_in_the_same_shape(gateway: Any, rest: RestClient) -> None:
    await gateway.shutdown()

    reply = await rest.post(f"/api/v1/sessions/{new_uuid()}/commands/answer", headers=JSON_HEADERS, data="{}")
    listed = await rest.get("/api/v1/sessions")

    for got in (reply, listed):
        error = assert_error(got, 503, GRPC_UNAVAILABLE)
        assert detail(error, "ErrorInfo")["reason"] == "UPSTREAM_UNAVAILABLE"
        assert "retry" in error["message"]


async def test_every_response_carries_a_request_id_and_a_callers_id_is_kept(
    simulator: Any, rest: RestClient
) -> None:
    session_id = await place_call(simulator, rest)
    replies = [
        await rest.post(f"/api/v1/sessions/{session_id}/commands/answer", headers=JSON_HEADERS, data="{}"),
        await rest.get("/api/v1/sessions"),
        await rest.get(f"/api/v1/sessions/{new_uuid()}"),
        await rest.get("/api/v1/nowhere"),
        await rest.post(f"/api/v1/sessions/{session_id}/commands/hangup", headers=JSON_HEADERS, data="{"),
        await rest.get("/healthz"),
        await rest.get("/openapi.json"),
    ]
    ids = [r.headers.get("x-request-id") for r in replies]
    assert all(ids), ids
    assert len(set(ids)) == len(ids)

    mine = await rest.get("/api/v1/sessions", headers={**DEMO_HEADERS, "X-Request-ID": "client-chosen-id-42"})
    assert mine.headers["x-request-id"] == "client-chosen-id-42"


async def test_the_request_id_reaches_the_server_and_the_access_log(
    rest: RestClient, envoy: EnvoyProcess, caplog: pytest.LogCaptureFixture
) -> None:
    request_id = f"rest-test-{new_uuid()}"
    caplog.set_level(logging.INFO, logger="callcontrol")

    reply = await rest.get(
        "/api/v1/sessions",
        headers={"X-App-ID": "demo-app", "X-API-Key": "wrong-key-123", "X-Request-ID": request_id},
    )

    assert reply.status == 401
    assert reply.headers["x-request-id"] == request_id
    # The server logs the refusal with the id it received as x-request-id metadata.
    assert request_id in caplog.text
    assert envoy.files is not None
    log_path = envoy.run_dir / "access.log"

    def entry() -> dict[str, Any] | None:
        if not log_path.exists():
            return None
        for line in log_path.read_text().splitlines():
            record = json.loads(line)
            if record["request_id"] == request_id:
                return dict(record)
        return None

    async def logged() -> bool:
        return entry() is not None

    await eventually(logged, "the access log line")
    record = entry()
    assert record is not None
    assert record["status"] == 401
    assert record["method"] == "GET"
    assert record["path"] == "/api/v1/sessions"
    assert record["app_id"] == "demo-app"
    assert "wrong-key-123" not in log_path.read_text()  # the API key is never logged
