"""The OpenAPI document: the spec's limits, the 202 envelope, errors and auth, and sound refs."""

from __future__ import annotations

import re
from typing import Any

import pytest

from callcontrol.rest import build_openapi

COMMANDS = ("answer", "hangup", "disconnect")
ERRORS = {"400", "401", "404", "429", "503"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_openapi(rate_limit_per_s=50)


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        _, kind, name = node["$ref"].rsplit("/", 2)
        node = document["components"][kind][name]
    return node


def _command(document: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(document["paths"][f"/api/v1/sessions/{{session_id}}/commands/{name}"]["post"])


def test_it_is_openapi_3_with_the_auth_headers_required_everywhere(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    schemes = document["components"]["securitySchemes"]
    assert schemes["AppId"] == {"type": "apiKey", "in": "header", "name": "X-App-ID"}
    assert schemes["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert document["security"] == [{"AppId": [], "ApiKey": []}]
    assert document["paths"]["/healthz"]["get"]["security"] == []


@pytest.mark.parametrize("name", COMMANDS)
def test_commands_answer_202_with_the_envelope_and_document_every_error(
    document: dict[str, Any], name: str
) -> None:
    operation = _command(document, name)

    assert "200" not in operation["responses"]
    accepted = operation["responses"]["202"]
    envelope = _resolve(document, accepted["content"]["application/json"]["schema"])
    assert envelope["required"] == ["operation_id", "status", "timeout_ms"]
    assert set(envelope["properties"]) == {"operation_id", "status", "timeout_ms"}
    assert envelope["properties"]["status"]["enum"] == ["in_progress"]
    assert envelope["properties"]["timeout_ms"]["type"] == "integer"
    assert envelope["properties"]["operation_id"]["format"] == "uuid"
    assert ERRORS | {"413"} <= set(operation["responses"])
    for status in ERRORS | {"413"}:
        response = _resolve(document, operation["responses"][status])
        error = _resolve(document, response["content"]["application/json"]["schema"])
        assert error["required"] == ["code", "message", "details"]


@pytest.mark.parametrize("name", COMMANDS)
def test_the_path_uuid_and_the_body_fields_carry_the_spec_limits(document: dict[str, Any], name: str) -> None:
    operation = _command(document, name)

    [param] = operation["parameters"]
    assert param["name"] == "session_id"
    assert param["in"] == "path"
    assert param["required"] is True
    assert param["schema"]["format"] == "uuid"
    body = _resolve(document, operation["requestBody"]["content"]["application/json"]["schema"])
    assert "session_id" not in body["properties"]  # bound to the path
    uid = body["properties"]["command_uid"]
    # "" is accepted as omitted (a fresh UUID, NORMAL_CLEARING): the schema must allow it.
    assert (uid["maxLength"], uid["pattern"], uid.get("minLength", 0)) == (128, "^[a-zA-Z0-9._-]*$", 0)
    # Unknown keys are refused 400 (rest.lua), and the schema says so.
    assert body["additionalProperties"] is False
    if name == "hangup":
        cause = body["properties"]["cause"]
        # Exactly the causes FreeSWITCH knows, and "" (the default).
        assert "" in cause["enum"]
        assert {"USER_BUSY", "NORMAL_CLEARING"} <= set(cause["enum"])
        assert all(len(c) <= 64 and set(c) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ_") for c in cause["enum"])
    else:
        assert set(body["properties"]) == {"command_uid"}


def test_the_429_response_documents_retry_after(document: dict[str, Any]) -> None:
    response = document["components"]["responses"]["TooManyRequests"]

    assert set(response["headers"]) == {"Retry-After", "X-Request-Id"}
    assert "50" in response["description"]


def test_the_watch_is_documented_as_ndjson_of_operations(document: dict[str, Any]) -> None:
    watch = document["paths"]["/api/v1/operations/{operation_id}/watch"]["get"]

    content = watch["responses"]["200"]["content"]
    assert list(content) == ["application/x-ndjson"]
    assert content["application/x-ndjson"]["schema"] == {"$ref": "#/components/schemas/Operation"}


def test_list_sessions_takes_its_paging_fields_as_query_parameters(document: dict[str, Any]) -> None:
    listing = document["paths"]["/api/v1/sessions"]["get"]

    assert {(p["name"], p["in"]) for p in listing["parameters"]} == {
        ("page_size", "query"),
        ("page_token", "query"),
    }
    assert "requestBody" not in listing


def test_every_ref_resolves_every_path_parameter_is_declared_and_ids_are_unique(
    document: dict[str, Any],
) -> None:
    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if "$ref" in node else []
            return found + [r for value in node.values() for r in refs(value)]
        if isinstance(node, list):
            return [r for value in node for r in refs(value)]
        return []

    for ref in refs(document):
        _resolve(document, {"$ref": ref})  # KeyError if dangling
    ids = []
    for path, item in document["paths"].items():
        for operation in item.values():
            ids.append(operation["operationId"])
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"\{([^}]+)\}", path)), path
            assert operation["responses"], path
    assert len(ids) == len(set(ids))


def test_response_schemas_require_what_the_transcoder_always_prints(document: dict[str, Any]) -> None:
    operation = document["components"]["schemas"]["Operation"]

    # Primitive fields are always printed; message fields (timestamps, error) only when set.
    assert {"operation_id", "status", "timeout_ms", "command", "session_id"} <= set(operation["required"])
    assert "finished_at" not in operation["required"]
    assert operation["properties"]["created_at"] == {"type": "string", "format": "date-time"}
