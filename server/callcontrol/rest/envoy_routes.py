"""Envoy's route table: one route per ``google.api.http`` binding, then the fixed ones.

What each route wants beyond "send it to the gRPC server" is data on the route:
its rate-limit group (metadata read by the limiter's one action), its success
status and content type (metadata read by ``rest.lua``), its deadline and its
retry policy. Everything is derived from the binding, so a new service needs
no change here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from callcontrol.rest.descriptor import ApiDescriptor, HttpBinding

CLUSTER = "callcontrol_grpc"
HEALTH_PATH = "/healthz"
OPENAPI_PATH = "/openapi.json"
# Largest accepted request body. Command bodies are a few hundred bytes at most.
MAX_REQUEST_BODY_BYTES = 8 * 1024
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
# Namespace of our own route metadata (the rate-limit group).
METADATA_NS = "callcontrol"
_T = "type.googleapis.com/"


def _per_filter_off(*filters: str) -> dict[str, Any]:
    return {name: {"@type": _T + "envoy.config.route.v3.FilterConfig", "disabled": True} for name in filters}


def rate_limit_actions() -> list[dict[str, Any]]:
    # One bucket per (group, application). A route without a group, or a request
    # without X-App-ID (refused 401 upstream anyway), yields no descriptor and falls
    # to the filter's default bucket.
    return [
        {
            "actions": [
                {
                    "metadata": {
                        "descriptor_key": "group",
                        "metadata_key": {"key": METADATA_NS, "path": [{"key": "rate_limit_group"}]},
                        "source": "ROUTE_ENTRY",
                    }
                },
                {"request_headers": {"header_name": "x-app-id", "descriptor_key": "app_id"}},
            ]
        }
    ]


def _api_route(binding: HttpBinding) -> dict[str, Any]:
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
        "metadata": {"filter_metadata": {METADATA_NS: {"rate_limit_group": binding.group}}},
    }
    lua: dict[str, str] = {}
    if binding.output_type == ENVELOPE_TYPE:
        lua["success_status"] = "202"
    if binding.server_streaming:
        lua["success_content_type"] = NDJSON
    if lua:
        route["metadata"]["filter_metadata"][LUA] = lua
    if not binding.server_streaming:
        route["request_headers_to_add"] = [
            {
                "header": {"key": "grpc-timeout", "value": f"{UNARY_TIMEOUT_S}S"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ]
    return route


def build_routes(api: ApiDescriptor, openapi_file: Path) -> list[dict[str, Any]]:
    """The API routes, /healthz, /openapi.json (served from ``openapi_file``), a JSON 404."""
    routes = [_api_route(b) for b in api.bindings]
    routes.append(
        {
            # Answered by the health_check filter before routing; the route exists so
            # the table documents it and the transcoder stays off it.
            "name": "healthz",
            "match": {"path": HEALTH_PATH},
            "direct_response": {"status": 503},
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
            "name": "not_found",
            "match": {"prefix": "/"},
            "direct_response": {"status": 404},
            "typed_per_filter_config": _per_filter_off(TRANSCODER),
        }
    )
    return routes
