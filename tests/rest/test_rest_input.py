"""Hostile and careless input over REST, through the real Envoy: a clean 4xx, nothing changed."""

from __future__ import annotations

import logging

import pytest

from callcontrol.simulator import FreeSwitchSimulator
from tests.rest.conftest import DEMO_HEADERS, JSON_HEADERS, RestClient, eventually, new_uuid, place_call
from tests.rest.test_rest_errors import (
    GRPC_INVALID_ARGUMENT,
    GRPC_UNAUTHENTICATED,
    assert_error,
    violated_fields,
)


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("GET", "/api/v1/sessions?page_token=%FF", "page_token"),
        ("GET", "/api/v1/sessions/%FF", "session_id"),
        ("POST", "/api/v1/sessions/%FF/commands/hangup", "session_id"),
        ("GET", "/api/v1/operations/%C3%28", "operation_id"),
        ("GET", "/api/v1/webhooks/deliveries?status=%FE", "status"),
        ("GET", "/api/v1/webhooks/deliveries/%ED%A0%80", "delivery_id"),
    ],
)
async def test_invalid_utf8_in_a_path_or_query_field_is_400_naming_it_without_a_traceback(
    rest: RestClient, caplog: pytest.LogCaptureFixture, method: str, path: str, field: str
) -> None:
    caplog.set_level(logging.INFO)
    data = "{}" if method == "POST" else None

    # Was 500 with grpc's "Exception deserializing request!" in the body, and a traceback.
    anonymous = await rest.request(method, path, headers={"Content-Type": "application/json"}, data=data)
    authenticated = await rest.request(method, path, headers=JSON_HEADERS, data=data)

    assert_error(anonymous, 401, GRPC_UNAUTHENTICATED)
    error = assert_error(authenticated, 400, GRPC_INVALID_ARGUMENT)
    assert violated_fields(error) == {field}
    assert "not valid UTF-8" in error["message"]
    assert "xception" not in error["message"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_an_unknown_body_field_is_400_naming_it_and_the_call_is_untouched(
    rest: RestClient, simulator: FreeSwitchSimulator
) -> None:
    session_id = await place_call(simulator, rest)
    hangup = f"/api/v1/sessions/{session_id}/commands/hangup"

    # Was 202, and the call hung up with NORMAL_CLEARING: the transcoder drops unknown keys.
    reply = await rest.post(hangup, headers=JSON_HEADERS, data='{"Cause": "USER_BUSY"}')

    error = assert_error(reply, 400, GRPC_INVALID_ARGUMENT)
    assert '"Cause"' in error["message"]
    assert "cause" in error["message"]  # the accepted keys are listed
    session = await rest.get(f"/api/v1/sessions/{session_id}")
    assert session.json()["state"] != "hangup"


@pytest.mark.parametrize(
    ("body", "unknown"),
    [
        ('{"cause": "USER_BUSY", "command_uid": "a-1"}', None),
        ('{"commandUid": "camel-1", "sessionId": "x"}', None),  # the transcoder's other spelling
        ('{"causE": "USER_BUSY"}', "causE"),
        (' {"cause": "USER_BUSY", "x": {"cause": 1}}', "x"),
        ('{"cause": "USER_\\"BUSY", "nested": [1, {"a": "}"}]}', "nested"),
        ('{"commandUid": "b-1", "extra": null}', "extra"),
        ('{"cause": "USER_BUSY", "bad\\u0022key": 1}', "bad?u0022key"),
        ('{"cause": null}', "null:cause"),
        ('{"command_uid" : null, "cause": "USER_BUSY"}', "null:command_uid"),
    ],
)
async def test_body_keys_are_checked_at_the_top_level_in_both_spellings(
    rest: RestClient, body: str, unknown: str | None
) -> None:
    reply = await rest.post(f"/api/v1/sessions/{new_uuid()}/commands/hangup", headers=JSON_HEADERS, data=body)

    if unknown is None:
        assert reply.status == 404, reply.body  # accepted keys: the unknown session is next
    elif unknown.startswith("null:"):
        # The transcoder reads null as omitted: a null cause hung up with NORMAL_CLEARING.
        error = assert_error(reply, 400, GRPC_INVALID_ARGUMENT)
        assert error["message"].startswith(f'field "{unknown[5:]}" is null in the request body')
    else:
        error = assert_error(reply, 400, GRPC_INVALID_ARGUMENT)
        assert error["message"].startswith(f'unknown field "{unknown}" in the request body')


async def test_a_body_that_is_not_json_is_still_the_transcoders_400(rest: RestClient) -> None:
    reply = await rest.post(f"/api/v1/sessions/{new_uuid()}/commands/hangup", headers=JSON_HEADERS, data="{")

    assert_error(reply, 400, GRPC_INVALID_ARGUMENT)


@pytest.mark.parametrize("path", ["/api/v1/sessions", "/api/v1/webhooks/deliveries"])
@pytest.mark.parametrize(("size", "ok"), [(-1, False), (0, True), (1000, True), (1001, False)])
async def test_page_size_is_validated_the_same_on_every_list(
    rest: RestClient, path: str, size: int, ok: bool
) -> None:
    reply = await rest.get(f"{path}?page_size={size}", headers=DEMO_HEADERS)

    if ok:
        assert reply.status == 200, reply.body
    else:
        # Deliveries clamped 1001 to 1000 while sessions refused it.
        error = assert_error(reply, 400, GRPC_INVALID_ARGUMENT)
        assert violated_fields(error) == {"page_size"}
        assert "between 0 and 1000" in error["message"]


async def test_an_empty_cause_is_the_default_as_the_schema_says(
    rest: RestClient, simulator: FreeSwitchSimulator
) -> None:
    session_id = await place_call(simulator, rest)

    reply = await rest.post(
        f"/api/v1/sessions/{session_id}/commands/hangup", headers=JSON_HEADERS, data='{"cause": ""}'
    )

    assert reply.status == 202, reply.body

    async def hung_up() -> bool:
        return (await rest.get(f"/api/v1/sessions/{session_id}")).status == 404

    await eventually(hung_up, "the call to be hung up")
