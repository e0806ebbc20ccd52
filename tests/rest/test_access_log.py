"""Envoy's access log: its own stream or file, one JSON object per request, the real gRPC status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from callcontrol.config import Address, RestConfig
from callcontrol.rest import EnvoyProcess, render_envoy_config
from tests.rest.conftest import JSON_HEADERS, RestClient, eventually, new_uuid, place_call


def _entries(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return {str(r["request_id"]): r for r in records}


async def test_grpc_status_is_the_servers_not_a_guess_from_the_http_status(
    rest: RestClient, envoy: EnvoyProcess, simulator: Any
) -> None:
    session_id = await place_call(simulator, rest)
    cases = {
        "ok": ("GET", "/api/v1/sessions", None, 200, 0),
        "accepted": ("POST", f"/api/v1/sessions/{session_id}/commands/answer", "{}", 202, 0),
        "not-found": ("GET", f"/api/v1/sessions/{new_uuid()}", None, 404, 5),
        "invalid": ("POST", f"/api/v1/sessions/{session_id}/commands/hangup", '{"cause": "nope"}', 400, 3),
        "unauthenticated": ("GET", "/api/v1/sessions", None, 401, 16),
    }
    for name, (method, path, body, status, _) in cases.items():
        headers = {**JSON_HEADERS, "X-Request-ID": f"log-{name}"}
        if name == "unauthenticated":
            headers["X-API-Key"] = "wrong-key-123"
        reply = await rest.request(method, path, headers=headers, data=body)
        assert reply.status == status, (name, reply.body)

    log_path = envoy.run_dir / "access.log"

    async def all_logged() -> bool:
        return {f"log-{n}" for n in cases} <= _entries(log_path).keys()

    await eventually(all_logged, "every request in the access log")
    entries = _entries(log_path)
    got = {name: (entries[f"log-{name}"]["status"], entries[f"log-{name}"]["grpc_status"]) for name in cases}
    assert got == {name: (case[3], case[4]) for name, case in cases.items()}


async def test_a_reply_envoy_makes_itself_has_no_grpc_status(rest: RestClient, envoy: EnvoyProcess) -> None:
    reply = await rest.get("/api/v1/nowhere", headers={**JSON_HEADERS, "X-Request-ID": "log-no-route"})
    assert reply.status == 404
    log_path = envoy.run_dir / "access.log"

    async def logged() -> bool:
        return "log-no-route" in _entries(log_path)

    await eventually(logged, "the access log line")
    assert _entries(log_path)["log-no-route"]["grpc_status"] is None


def _access_loggers(rest: RestConfig, **kwargs: Any) -> list[dict[str, Any]]:
    text = render_envoy_config(
        rest, Address("127.0.0.1", 50051), openapi_file=Path("/x/openapi.json"), **kwargs
    )
    [listener] = json.loads(text)["static_resources"]["listeners"]
    return list(listener["filter_chains"][0]["filters"][0]["typed_config"]["access_log"])


def test_the_access_log_goes_to_stderr_unless_told_otherwise() -> None:
    [default] = _access_loggers(RestConfig())
    assert default["typed_config"]["@type"].endswith("StderrAccessLog")
    [stdout] = _access_loggers(RestConfig(access_log="stdout"))
    assert stdout["typed_config"]["@type"].endswith("StdoutAccessLog")
    [file] = _access_loggers(RestConfig(access_log="/var/log/callcontrol/access.log"))
    assert file["typed_config"]["path"] == "/var/log/callcontrol/access.log"
    assert _access_loggers(RestConfig(access_log="off")) == []
    [override] = _access_loggers(RestConfig(), access_log_path=Path("/srv/a.log"))
    assert override["typed_config"]["path"] == "/srv/a.log"


async def test_envoy_logs_to_this_processs_stderr_by_default(
    gateway: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    rest = RestConfig(listen=Address("127.0.0.1", 0), admin=Address("127.0.0.1", 0))
    assert rest.access_log == "stderr"
    seen: list[str] = []
    async with EnvoyProcess(rest, gateway.grpc_address, tmp_path / "envoy", concurrency=1) as envoy:
        await envoy.wait_healthy()
        async with aiohttp.ClientSession() as http:
            headers = {**JSON_HEADERS, "X-Request-ID": "to-stderr"}
            async with http.get(f"{envoy.rest_url}/api/v1/sessions", headers=headers) as reply:
                assert reply.status == 200
                # The router adds none of its x-envoy-* headers (upstream service time...).
                assert not [h for h in reply.headers if h.lower().startswith("x-envoy-")]

        async def logged() -> bool:
            captured = capfd.readouterr()
            seen.extend(captured.err.splitlines())
            assert "to-stderr" not in captured.out  # not beside the banner
            return any('"to-stderr"' in line for line in seen)

        await eventually(logged, "the access log line on stderr")
    [line] = [line for line in seen if '"to-stderr"' in line]
    assert json.loads(line)["grpc_status"] == 0
