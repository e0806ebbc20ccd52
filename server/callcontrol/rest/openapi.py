"""OpenAPI 3.1 document of the REST API, generated from the descriptor set.

The paths are the ``google.api.http`` bindings Envoy routes (``descriptor.py``),
the schemas the messages as the transcoder prints them (``json_schema.py``).
What protobuf cannot say is added from the spec: the 202 envelope of commands,
the error shape of every non-2xx answer, Retry-After on 429, the two auth headers.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import descriptor_pb2

from callcontrol.rest.descriptor import ApiDescriptor, HttpBinding, load_api
from callcontrol.rest.envoy_routes import (
    ENVELOPE_TYPE,
    HEALTH_PATH,
    MAX_REQUEST_BODY_BYTES,
    NDJSON,
    OPENAPI_PATH,
)
from callcontrol.rest.json_schema import WELL_KNOWN, Schemas, reachable, ref

OPENAPI_VERSION = "3.1.0"
_ACCEPTED = "Accepted: the outcome arrives as a command.result webhook and in the operation."
API_VERSION = "v1"

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": (
        "google.rpc.Status as JSON. `code` is the gRPC status code; `details` holds "
        "google.rpc detail messages: BadRequest (field_violations naming the field), "
        "ResourceInfo (what was not found), ErrorInfo (a machine-readable reason)."
    ),
    "required": ["code", "message", "details"],
    "properties": {
        "code": {"type": "integer", "format": "int32"},
        "message": {"type": "string"},
        "details": {"type": "array", "items": WELL_KNOWN["google.protobuf.Any"]},
    },
}

# (status, component name, description); 413 only where a body is accepted.
_ERRORS: tuple[tuple[str, str, str], ...] = (
    (
        "400",
        "BadRequest",
        "A malformed request (a field named in a BadRequest detail, bad JSON, an unknown "
        "query parameter or body field, text that is not UTF-8), or a session that cannot "
        "take the command (FAILED_PRECONDITION, e.g. already disconnected).",
    ),
    ("401", "Unauthenticated", "X-App-ID or X-API-Key missing or wrong."),
    ("404", "NotFound", "No such session or operation for this application, or no such route."),
    ("413", "PayloadTooLarge", f"Request body larger than {MAX_REQUEST_BODY_BYTES} bytes."),
    (
        "429",
        "TooManyRequests",
        "Over the application's rate limit for this group of endpoints, or too many failed "
        "authentications from this client address.",
    ),
    ("503", "Unavailable", "The call-control service is unavailable; retry later."),
)


def _summary(binding: HttpBinding) -> str:
    text = binding.comment
    if not text:
        return binding.method
    first = text.split(". ")[0].rstrip(".")
    return first if len(first) <= 120 else binding.method


def _error_responses(with_body: bool) -> dict[str, Any]:
    return {status: ref("responses", name) for status, name, _ in _ERRORS if with_body or status != "413"}


def _operation(binding: HttpBinding, schemas: Schemas, operation_id: str) -> dict[str, Any]:
    request = schemas.descriptor(binding.input_type)
    params = binding.path_params
    fields = {f.name: f for f in request.field}
    parameters: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": schemas.field(binding.input_type, fields[name])
            if name in fields
            else {"type": "string"},
        }
        for name in params
    ]
    op: dict[str, Any] = {
        "operationId": operation_id,
        "tags": [binding.service.rsplit(".", 1)[-1]],
        "summary": _summary(binding),
    }
    if binding.comment:
        op["description"] = binding.comment
    if binding.body == "*":
        body_schema = schemas.message(
            binding.input_type,
            without=params,
            name=schemas.name(binding.input_type) + ("Body" if params else ""),
            closed=True,
        )
        op["requestBody"] = {"required": False, "content": {"application/json": {"schema": body_schema}}}
    elif binding.body:
        op["requestBody"] = {
            "required": False,
            "content": {
                "application/json": {"schema": schemas.field(binding.input_type, fields[binding.body])}
            },
        }
    if not binding.body:
        # Every field not bound to the path is a query parameter (scalars only).
        for field in request.field:
            if field.name in params or field.type == descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE:
                continue
            parameters.append(
                {
                    "name": field.name,
                    "in": "query",
                    "required": False,
                    "schema": schemas.field(binding.input_type, field),
                }
            )
    if parameters:
        op["parameters"] = parameters
    op["responses"] = {**_success(binding, schemas), **_error_responses(bool(binding.body))}
    return op


def _success(binding: HttpBinding, schemas: Schemas) -> dict[str, Any]:
    schema = schemas.message(binding.output_type)
    headers = {"X-Request-Id": ref("headers", "X-Request-Id")}
    if binding.server_streaming:
        return {
            "200": {
                "description": (
                    "A stream of newline-delimited JSON objects, one per change, the first being "
                    "the current state; the stream ends after the terminal state."
                ),
                "headers": headers,
                # The schema is that of each line.
                "content": {NDJSON: {"schema": schema}},
            }
        }
    if binding.output_type == ENVELOPE_TYPE:
        return {
            "202": {
                "description": _ACCEPTED,
                "headers": headers,
                "content": {"application/json": {"schema": schema}},
            }
        }
    return {
        "200": {"description": "OK", "headers": headers, "content": {"application/json": {"schema": schema}}}
    }


def _components(schemas: Schemas, rate_limit_per_s: int | None) -> dict[str, Any]:
    limit = f" ({rate_limit_per_s} requests per second)" if rate_limit_per_s else ""
    # The server limits (after authentication, per application and group); the wait
    # it computes comes back as Retry-After.
    error_content = {"application/json": {"schema": ref("schemas", "Error")}}
    responses: dict[str, Any] = {}
    for status, name, description in _ERRORS:
        response: dict[str, Any] = {
            "description": description + (limit if status == "429" else ""),
            "headers": {"X-Request-Id": ref("headers", "X-Request-Id")},
            "content": error_content,
        }
        if status == "429":
            response["headers"]["Retry-After"] = ref("headers", "Retry-After")
        responses[name] = response
    integer = {"schema": {"type": "integer", "minimum": 0}}
    return {
        "schemas": {**schemas.components, "Error": _ERROR_SCHEMA},
        "responses": responses,
        "headers": {
            "X-Request-Id": {
                "description": "The request's id (the caller's own X-Request-Id when sent), as logged.",
                "schema": {"type": "string"},
            },
            "Retry-After": {"description": "Seconds to wait before retrying.", **integer},
        },
        "securitySchemes": {
            "AppId": {"type": "apiKey", "in": "header", "name": "X-App-ID"},
            "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        },
    }


def _infrastructure_paths() -> dict[str, Any]:
    return {
        HEALTH_PATH: {
            "get": {
                "operationId": "Healthz",
                "tags": ["Infrastructure"],
                "summary": "Whether the gateway behind this proxy is serving (gRPC health)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "Serving.",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["status"],
                                    "properties": {"status": {"type": "string", "enum": ["SERVING"]}},
                                }
                            }
                        },
                    },
                    "503": ref("responses", "Unavailable"),
                },
            }
        },
        OPENAPI_PATH: {
            "get": {
                "operationId": "OpenApi",
                "tags": ["Infrastructure"],
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }


def build_openapi(
    api: ApiDescriptor | None = None,
    *,
    server_url: str = "/",
    rate_limit_per_s: int | None = None,
) -> dict[str, Any]:
    """The OpenAPI document as a dict (JSON-ready)."""
    api = api or load_api()
    schemas = Schemas(api, reachable(api, {b.output_type for b in api.bindings}))
    paths: dict[str, dict[str, Any]] = {}
    used_ids: set[str] = set()
    for binding in api.bindings:
        base = f"{binding.service.rsplit('.', 1)[-1]}_{binding.method}"
        operation_id, n = base, 1
        while operation_id in used_ids:  # additional_bindings of one method
            n += 1
            operation_id = f"{base}{n}"
        used_ids.add(operation_id)
        paths.setdefault(binding.openapi_path, {})[binding.verb.lower()] = _operation(
            binding, schemas, operation_id
        )
    paths.update(_infrastructure_paths())
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Call control API",
            "version": API_VERSION,
            "description": (
                "Answer, hang up and disconnect live FreeSWITCH calls. Every command is accepted at "
                "once (202) with an operation envelope; the outcome arrives as webhooks and can be "
                "read or watched as the operation. Errors are google.rpc.Status JSON."
            ),
        },
        "servers": [{"url": server_url}],
        "security": [{"AppId": [], "ApiKey": []}],
        "tags": [{"name": s.rsplit(".", 1)[-1], "description": s} for s in api.services]
        + [{"name": "Infrastructure"}],
        "paths": dict(sorted(paths.items())),
        "components": _components(schemas, rate_limit_per_s),
    }


def render_openapi(
    api: ApiDescriptor | None = None, *, server_url: str = "/", rate_limit_per_s: int | None = None
) -> str:
    """The document as JSON text (what Envoy serves at /openapi.json)."""
    document = build_openapi(api, server_url=server_url, rate_limit_per_s=rate_limit_per_s)
    return json.dumps(document, indent=2, sort_keys=False) + "\n"
