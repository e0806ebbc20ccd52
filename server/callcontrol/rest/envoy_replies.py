"""Envoy's own replies in the server's error shape, ``{code, message, details}``.

The transcoder turns the server's gRPC errors into google.rpc.Status JSON; Envoy's
local replies (parse errors, unknown route, 405, 413, 503) would otherwise be plain
text. ``local_reply_config`` mappers rewrite each status into the same shape, with a
google.rpc.ErrorInfo saying which reply it was and Envoy's own detail string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from callcontrol.rest.envoy_routes import MAX_REQUEST_BODY_BYTES

ERROR_DOMAIN = "callcontrol.gateway"
_T = "type.googleapis.com/"
# /healthz with or without a query string.
HEALTH_PATH_REGEX = r"^/healthz(\?.*)?$"


@dataclass(frozen=True, slots=True)
class _LocalError:
    """How one HTTP status of an Envoy local reply is presented to clients."""

    status: int
    grpc_code: int
    reason: str
    message: str  # "" keeps Envoy's own text (it says what was wrong with the request)


# Statuses Envoy answers itself; gRPC codes follow grpc-gateway's HTTP mapping.
LOCAL_ERRORS: tuple[_LocalError, ...] = (
    _LocalError(400, 3, "INVALID_REQUEST", ""),
    _LocalError(401, 16, "UNAUTHENTICATED", ""),
    _LocalError(403, 7, "PERMISSION_DENIED", ""),
    _LocalError(404, 5, "ROUTE_NOT_FOUND", "no such API route (check the path and the HTTP method)"),
    _LocalError(405, 12, "METHOD_NOT_ALLOWED", "this path does not serve this HTTP method (see Allow)"),
    _LocalError(408, 4, "REQUEST_TIMEOUT", "the request was not received in time"),
    _LocalError(413, 3, "BODY_TOO_LARGE", f"request body larger than {MAX_REQUEST_BODY_BYTES} bytes"),
    _LocalError(431, 3, "HEADERS_TOO_LARGE", "request headers too large"),
    _LocalError(500, 13, "INTERNAL", "internal error in the REST gateway"),
    _LocalError(501, 12, "UNIMPLEMENTED", ""),
    _LocalError(502, 14, "UPSTREAM_UNAVAILABLE", "the call-control service is unavailable; retry later"),
    _LocalError(503, 14, "UPSTREAM_UNAVAILABLE", "the call-control service is unavailable; retry later"),
    _LocalError(504, 4, "UPSTREAM_TIMEOUT", "the call-control service did not answer in time"),
)


def _error_body(error: _LocalError) -> dict[str, Any]:
    return {
        "code": error.grpc_code,
        "message": error.message or "%LOCAL_REPLY_BODY%",
        "details": [
            {
                "@type": _T + "google.rpc.ErrorInfo",
                "reason": error.reason,
                "domain": ERROR_DOMAIN,
                "metadata": {"responseCodeDetails": "%RESPONSE_CODE_DETAILS%"},
            }
        ],
    }


def _status_filter(op: str, status: int) -> dict[str, Any]:
    return {
        "status_code_filter": {
            "comparison": {
                "op": op,
                "value": {
                    "default_value": status,
                    "runtime_key": f"callcontrol.local_reply.{op.lower()}_{status}",
                },
            }
        }
    }


def local_reply_config() -> dict[str, Any]:
    """The HTTP connection manager's ``local_reply_config``; first matching mapper wins."""
    mappers: list[dict[str, Any]] = [
        {
            "filter": {
                "and_filter": {
                    "filters": [
                        _status_filter("EQ", 200),
                        {
                            "header_filter": {
                                "header": {
                                    "name": ":path",
                                    "string_match": {"safe_regex": {"regex": HEALTH_PATH_REGEX}},
                                }
                            }
                        },
                    ]
                }
            },
            "body_format_override": {"json_format": {"status": "SERVING"}},
        }
    ]
    mappers.extend(
        {
            "filter": _status_filter("EQ", error.status),
            "body_format_override": {"json_format": _error_body(error)},
        }
        for error in LOCAL_ERRORS
    )
    mappers.append(
        {
            "filter": _status_filter("GE", 400),
            "body_format_override": {
                "json_format": _error_body(_LocalError(0, 2, "UNKNOWN", "")),
            },
        }
    )
    return {"mappers": mappers}
