"""Envoy's route table: one route per ``google.api.http`` binding, then the fixed ones.

What each route wants beyond "send it to the gRPC server" is data on the route:
its success status, content type and accepted body keys (metadata read by
``rest.lua``), its deadline and its retry policy. A known path asked with another
method is 405 with ``Allow``. Everything is derived from the binding, so a new service needs
no change here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2

from callcontrol.rest.descriptor import ApiDescriptor, HttpBinding

CLUSTER = "callcontrol_grpc"
HEALTH_PATH = "/healthz"
OPENAPI_PATH = "/openapi.json"
# Largest accepted request body. Command bodies are a few hundred bytes at most.
MAX_REQUEST_BODY_BYTES = 8 * 1024
# Largest transcoded unary response: a full page (1000) of sessions or deliveries
# is well under 1 MiB; the cap leaves room and still bounds Envoy's buffer.
MAX_RESPONSE_BODY_BYTES = 4 * 1024 * 1024
# The type every command returns; a method returning it is answered 202.
ENVELOPE_TYPE = "callcontrol.v1.OperationEnvelope"
# Unary calls: Envoy's route timeout, and the deadline the server sees.
UNARY_TIMEOUT_S = 10
# Streams (watch) have no overall deadline; a silent one is cut after this long.
STREAM_IDLE_TIMEOUT_S = 300
# Content type of server-streaming routes: one JSON object per line.
NDJSON = "application/x-ndjson"

TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
LUA = "envoy.filters.http.lua"
_T = "type.googleapis.com/"


def _per_filter_off(*filters: str) -> dict[str, Any]:
    return {name: {"@type": _T + "envoy.config.route.v3.FilterConfig", "disabled": True} for name in filters}


def _json_names(field: descriptor_pb2.FieldDescriptorProto) -> tuple[str, ...]:
    # The transcoder accepts a field under its proto name and its JSON (lowerCamel) name.
    camel = field.json_name or re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), field.name)
    return (field.name, camel) if camel != field.name else (field.name,)


def body_fields(api: ApiDescriptor, binding: HttpBinding) -> tuple[str, ...] | None:
    """The top-level JSON keys a request body may have, or None if it is not an object.

    The transcoder silently drops unknown keys (no option rejects them), so
    ``rest.lua`` checks the body's keys against this list, rendered into the route.
    """
    if not binding.body:
        return None
    messages = api.messages()
    message = messages[binding.input_type][0]
    if binding.body != "*":
        [field] = [f for f in message.field if f.name == binding.body]
        if field.type != descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE:
            return None
        wrapped = messages.get(field.type_name.lstrip("."))
        if wrapped is None:  # a well-known type (Struct, ...): its own JSON form
            return None
        message = wrapped[0]
    return tuple(sorted(name for f in message.field for name in _json_names(f)))


def _api_route(binding: HttpBinding, allowed_body_fields: tuple[str, ...] | None) -> dict[str, Any]:
    action: dict[str, Any] = {"cluster": CLUSTER}
    if binding.server_streaming:
        # A watch lasts as long as its operation: no overall deadline, an idle cut.
        action["timeout"] = "0s"
        action["idle_timeout"] = f"{STREAM_IDLE_TIMEOUT_S}s"
    else:
        action["timeout"] = f"{UNARY_TIMEOUT_S}s"
    if binding.verb == "GET":
        retry_on = "connect-failure,refused-stream,unavailable"
    else:
        # Only failures where the server cannot have seen the request: a command
        # must never run twice because Envoy retried it.
        retry_on = "connect-failure,refused-stream"
    action["retry_policy"] = {"retry_on": retry_on, "num_retries": 2}
    route: dict[str, Any] = {
        "name": binding.route_name,
        "match": {
            "safe_regex": {"regex": binding.path_regex},
            "headers": [{"name": ":method", "string_match": {"exact": binding.verb}}],
        },
        "route": action,
    }
    lua: dict[str, Any] = {}
    if binding.output_type == ENVELOPE_TYPE:
        lua["success_status"] = "202"
    if binding.server_streaming:
        lua["success_content_type"] = NDJSON
    if allowed_body_fields is not None:
        lua["body_fields"] = dict.fromkeys(allowed_body_fields, True)
    if lua:
        route["metadata"] = {"filter_metadata": {LUA: lua}}
    if not binding.server_streaming:
        route["request_headers_to_add"] = [
            {
                "header": {"key": "grpc-timeout", "value": f"{UNARY_TIMEOUT_S}S"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ]
    return route


# The health check answers reads only; anything else on /healthz is 405.
READ_METHODS = {"name": ":method", "string_match": {"safe_regex": {"regex": "^(GET|HEAD)$"}}}


def _allow_header(verbs: list[str]) -> dict[str, Any]:
    return {
        "header": {"key": "allow", "value": ", ".join(verbs)},
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
    }


def _method_not_allowed(api: ApiDescriptor) -> list[dict[str, Any]]:
    """After the API routes: a path that exists, asked with a method it does not serve, is 405."""
    verbs: dict[str, list[str]] = {}
    for binding in api.bindings:
        verbs.setdefault(binding.path_regex, []).append(binding.verb)
    return [
        {
            "name": f"method_not_allowed_{index}",
            "match": {"safe_regex": {"regex": regex}},
            "direct_response": {"status": 405},
            "response_headers_to_add": [_allow_header(sorted(set(allowed)))],
            "typed_per_filter_config": _per_filter_off(TRANSCODER),
        }
        for index, (regex, allowed) in enumerate(verbs.items())
    ]


def build_routes(api: ApiDescriptor, openapi_file: Path) -> list[dict[str, Any]]:
    """The API routes, /healthz, /openapi.json (served from ``openapi_file``), a JSON 404."""
    routes = [_api_route(b, body_fields(api, b)) for b in api.bindings]
    routes.extend(_method_not_allowed(api))
    routes.append(
        {
            # Answered by the health_check filter before routing; the route exists so
            # the table documents it and the transcoder stays off it.
            "name": "healthz",
            "match": {"path": HEALTH_PATH, "headers": [READ_METHODS]},
            "direct_response": {"status": 503},
            "typed_per_filter_config": _per_filter_off(TRANSCODER),
        }
    )
    routes.append(
        {
            "name": "healthz_405",
            "match": {"path": HEALTH_PATH},
            "direct_response": {"status": 405},
            "response_headers_to_add": [_allow_header(["GET", "HEAD"])],
            "typed_per_filter_config": _per_filter_off(TRANSCODER),
        }
    )
    routes.append(
        {
            "name": "openapi",
            "match": {
                "path": OPENAPI_PATH,
                "headers": [{"name": ":method", "string_match": {"exact": "GET"}}],
            },
            "direct_response": {"status": 200, "body": {"filename": str(openapi_file)}},
            "response_headers_to_add": [
                {
                    "header": {"key": "content-type", "value": "application/json"},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }
            ],
            "typed_per_filter_config": _per_filter_off(TRANSCODER),
        }
    )
    routes.append(
        {
            # Any other method on /openapi.json.
            "name": "openapi_405",
            "match": {"path": OPENAPI_PATH},
            "direct_response": {"status": 405},
            "response_headers_to_add": [_allow_header(["GET"])],
            "typed_per_filter_config": _per_filter_off(TRANSCODER),
        }
    )
    routes.append(
        {
            "name": "not_found",
            "match": {"prefix": "/"},
            "direct_response": {"status": 404},
            "typed_per_filter_config": _per_filter_off(TRANSCODER),
        }
    )
    return routes
