"""Watching an operation over REST: newline-delimited JSON, one object per change."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp

from tests.rest.conftest import DEMO_HEADERS, JSON_HEADERS, TERMINAL, RestClient, place_call


async def _watch(
    http: aiohttp.ClientSession, url: str
) -> tuple[aiohttp.ClientResponse, list[tuple[float, dict[str, Any]]]]:
    """Every line of the stream with the time it arrived."""
    async with http.get(url, headers=DEMO_HEADERS) as response:
        assert response.status == 200, await response.text()
        lines = [(time.monotonic(), json.loads(raw)) async for raw in response.content if raw.strip()]
        return response, lines


async def _answer_late(simulator: Any, rest: RestClient) -> tuple[str, str]:
    """A call whose answer FreeSWITCH confirms 0.5 s late: (session id, operation id)."""
    session_id = await place_call(simulator, rest, answer_delay=0.5)
    accepted = await rest.post(
        f"/api/v1/sessions/{session_id}/commands/answer", headers=JSON_HEADERS, data="{}"
    )
    return session_id, accepted.json()["operation_id"]


async def test_watch_streams_each_change_as_a_json_line_ending_with_the_terminal_state(
    simulator: Any, rest: RestClient
) -> None:
    # FreeSWITCH confirms the answer 0.5 s late, so the watch sees it happen.
    session_id, operation_id = await _answer_late(simulator, rest)

    response, lines = await _watch(rest.http, f"{rest.base_url}/api/v1/operations/{operation_id}/watch")

    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.headers["x-request-id"]
    statuses = [line["status"] for _, line in lines]
    assert statuses[0] == "in_progress"
    assert statuses[-1] == "succeeded"
    assert set(statuses[:-1]) == {"in_progress"}  # nothing after the terminal state
    assert all(line["operation_id"] == operation_id for _, line in lines)
    assert all(line["command"] == "answer" and line["session_id"] == session_id for _, line in lines)
    # Delivered as it happened, not buffered until the end.
    first_at, last_at = lines[0][0], lines[-1][0]
    assert last_at - first_at > 0.2


async def test_watching_a_finished_operation_sends_its_terminal_state_and_ends(
    simulator: Any, rest: RestClient
) -> None:
    session_id = await place_call(simulator, rest)
    accepted = await rest.post(
        f"/api/v1/sessions/{session_id}/commands/hangup", headers=JSON_HEADERS, data='{"cause": "USER_BUSY"}'
    )
    operation_id = accepted.json()["operation_id"]
    url = f"{rest.base_url}/api/v1/operations/{operation_id}/watch"

    _, first = await _watch(rest.http, url)
    _, again = await _watch(rest.http, url)

    assert first[-1][1]["status"] in TERMINAL
    assert [line for _, line in again] == [first[-1][1]]


async def test_a_client_cannot_cut_the_watch_with_envoy_timeout_headers(
    simulator: Any, rest: RestClient
) -> None:
    # Clients are external: Envoy strips x-envoy-* controls (timeouts, retries) they send.
    _, operation_id = await _answer_late(simulator, rest)
    headers = {**DEMO_HEADERS, "x-envoy-upstream-rq-timeout-ms": "50", "x-envoy-retry-on": "5xx"}

    async with rest.http.get(
        f"{rest.base_url}/api/v1/operations/{operation_id}/watch", headers=headers
    ) as response:
        lines = [json.loads(raw) async for raw in response.content if raw.strip()]

    assert response.status == 200
    assert lines[-1]["status"] == "succeeded"
