"""The spec's commands over REST: 202 with exactly the operation envelope, via a real Envoy."""

from __future__ import annotations

import asyncio
import json
import shlex
import shutil
import uuid
from typing import Any

import pytest

from callcontrol.config import DEMO_API_KEY, DEMO_APP_ID
from callcontrol.rest import EnvoyProcess
from tests.rest.conftest import JSON_HEADERS, TERMINAL, RestClient, eventually, place_call

# The spec's curl examples, verbatim but for the host and the placeholders.
SPEC_CURLS = {
    "answer": """curl -X POST https://gateway.example.com/api/v1/sessions/{uuid}/commands/answer \\
  -H "X-App-ID: YOUR_APP_ID" \\
  -H "X-API-Key: YOUR_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{}'""",
    "hangup": """curl -X POST https://gateway.example.com/api/v1/sessions/{uuid}/commands/hangup \\
  -H "X-App-ID: YOUR_APP_ID" \\
  -H "X-API-Key: YOUR_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{"cause": "USER_BUSY"}'""",
    "disconnect": """curl -X POST https://gateway.example.com/api/v1/sessions/{uuid}/commands/disconnect \\
  -H "X-App-ID: YOUR_APP_ID" \\
  -H "X-API-Key: YOUR_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{}'""",
}
SPEC_BODIES = {"answer": "{}", "hangup": '{"cause": "USER_BUSY"}', "disconnect": "{}"}
ENVELOPE_KEYS = ["operation_id", "status", "timeout_ms"]


def assert_envelope(status: int, body: bytes) -> dict[str, Any]:
    """202 and exactly the spec's envelope: three keys, in_progress, 2000 as a number."""
    assert status == 202, body
    envelope = json.loads(body)
    assert list(envelope) == ENVELOPE_KEYS  # no extra field, none missing
    assert envelope["status"] == "in_progress"
    assert envelope["timeout_ms"] == 2000
    assert isinstance(envelope["timeout_ms"], int)
    assert str(uuid.UUID(envelope["operation_id"])) == envelope["operation_id"]
    assert envelope == {"operation_id": envelope["operation_id"], "status": "in_progress", "timeout_ms": 2000}
    return dict(envelope)


@pytest.mark.parametrize("command", ["answer", "hangup", "disconnect"])
async def test_each_spec_command_answers_202_with_exactly_the_envelope(
    simulator: Any, rest: RestClient, command: str
) -> None:
    session_id = await place_call(simulator, rest)

    reply = await rest.post(
        f"/api/v1/sessions/{session_id}/commands/{command}", headers=JSON_HEADERS, data=SPEC_BODIES[command]
    )

    assert_envelope(reply.status, reply.body)
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["x-request-id"]
    # The gRPC hop's status headers do not leak into the REST answer.
    assert not {h for h in reply.headers if h.startswith("grpc-")}


@pytest.mark.parametrize("command", ["answer", "hangup", "disconnect"])
async def test_the_spec_curl_example_works_verbatim(
    simulator: Any, rest: RestClient, envoy: EnvoyProcess, command: str
) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed: the verbatim curl examples cannot run")
    session_id = await place_call(simulator, rest)
    text = (
        SPEC_CURLS[command]
        .replace("https://gateway.example.com", envoy.rest_url)
        .replace("{uuid}", session_id)
        .replace("YOUR_APP_ID", DEMO_APP_ID)
        .replace("YOUR_API_KEY", DEMO_API_KEY)
        .replace("\\\n", " ")
    )
    args = shlex.split(text)
    assert args[0] == "curl"
    # -s: no progress meter; -w: the status after the body, on its own line.
    proc = await asyncio.create_subprocess_exec(
        curl, "-s", "-w", "\n%{http_code}", *args[1:], stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    body, _, code = out.rpartition(b"\n")

    assert_envelope(int(code), body)


async def test_the_operation_reaches_its_outcome_and_is_readable_over_rest(
    simulator: Any, rest: RestClient
) -> None:
    session_id = await place_call(simulator, rest)
    reply = await rest.post(f"/api/v1/sessions/{session_id}/commands/answer", headers=JSON_HEADERS, data="{}")
    operation_id = assert_envelope(reply.status, reply.body)["operation_id"]

    async def finished() -> bool:
        got = await rest.get(f"/api/v1/operations/{operation_id}")
        return got.status == 200 and got.json()["status"] in TERMINAL

    await eventually(finished, "the answer operation to finish")
    operation = (await rest.get(f"/api/v1/operations/{operation_id}")).json()
    assert operation["operation_id"] == operation_id
    assert operation["command"] == "answer"
    assert operation["session_id"] == session_id
    assert operation["status"] == "succeeded"
    assert operation["timeout_ms"] == 2000


async def test_same_command_uid_returns_the_first_operation(simulator: Any, rest: RestClient) -> None:
    session_id = await place_call(simulator, rest)
    path = f"/api/v1/sessions/{session_id}/commands/hangup"
    body = '{"cause": "USER_BUSY", "command_uid": "retry-1.a_B"}'

    first = await rest.post(path, headers=JSON_HEADERS, data=body)
    second = await rest.post(path, headers=JSON_HEADERS, data=body)

    assert assert_envelope(first.status, first.body) == assert_envelope(second.status, second.body)


async def test_a_command_without_body_or_content_type_is_accepted(simulator: Any, rest: RestClient) -> None:
    session_id = await place_call(simulator, rest)

    reply = await rest.post(f"/api/v1/sessions/{session_id}/commands/answer")

    assert_envelope(reply.status, reply.body)


async def test_sessions_are_listed_and_read_over_rest(simulator: Any, rest: RestClient) -> None:
    session_id = await place_call(simulator, rest)

    listed = await rest.get("/api/v1/sessions?page_size=1000")
    one = await rest.get(f"/api/v1/sessions/{session_id}")

    assert listed.status == 200
    assert session_id in [s["session_id"] for s in listed.json()["sessions"]]
    assert "next_page_token" in listed.json()
    assert one.status == 200
    session = one.json()
    assert session["session_id"] == session_id
    # Primitive fields are printed even when empty; names are the proto's snake_case.
    assert {"session_id", "state", "caller_number", "destination_number", "direction"} <= set(session)
