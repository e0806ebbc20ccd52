"""Render Envoy's bootstrap for the REST layer from data (never edited by hand).

Request path through the one HTTP connection manager::

    lua (202, strip grpc-*) → health_check (/healthz) → grpc_json_transcoder → router

* Routes come from the descriptor's ``google.api.http`` bindings (``envoy_routes.py``),
  so every service in the set is served; anything else is a JSON 404.
* A method returning the deferred ``OperationEnvelope`` (the session commands) is
  answered 202 by ``rest.lua`` as its route's metadata asks, and is never retried
  once sent.
* Envoy's own replies (parse errors, 404, 405, 413, 503) are rewritten into the
  server's error shape ``{code, message, details}`` (``envoy_replies.py``).
* No rate limiter here: the server limits each application after authenticating it
  and failed authentications per client address, which it reads as the last
  ``x-forwarded-for`` entry (``use_remote_address`` makes Envoy append the peer).
* ``/healthz`` is answered by the health_check filter from the gRPC cluster's
  active ``grpc.health.v1`` checks; ``/openapi.json`` is a direct response.

The output is JSON (Envoy reads ``.json`` bootstraps), so no YAML dependency.
"""

from __future__ import annotations

import ipaddress
import json
from importlib import resources
from pathlib import Path
from typing import Any

from callcontrol.config import Address, ConfigError, RestConfig, RestTlsConfig
from callcontrol.rest.descriptor import ApiDescriptor, load_api
from callcontrol.rest.envoy_replies import HEALTH_PATH_REGEX, local_reply_config
from callcontrol.rest.envoy_routes import (
    CLUSTER,
    LUA,
    MAX_REQUEST_BODY_BYTES,
    MAX_RESPONSE_BODY_BYTES,
    READ_METHODS,
    STREAM_IDLE_TIMEOUT_S,
    TRANSCODER,
    build_routes,
)

_T = "type.googleapis.com/"
_CONNECTIONS_MONITOR = (
    "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
)
_LOOPBACK_NAMES = {"localhost"}


def _lua_source(name: str) -> str:
    return resources.files("callcontrol.rest").joinpath(name).read_text(encoding="utf-8")


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _socket(address: Address) -> dict[str, Any]:
    return {"socket_address": {"address": address.host, "port_value": address.port}}


def _upstream_host(address: Address) -> tuple[str, bool]:
    """The host Envoy connects to, and whether it is an IP (else resolved by DNS)."""
    host = address.host
    if host in ("0.0.0.0", ""):  # noqa: S104 - a wildcard bind is reached on loopback
        return "127.0.0.1", True
    if host == "::":
        return "::1", True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host, False
    return host, True


def _tls_socket(context_type: str, context: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": _T + "envoy.extensions.transport_sockets.tls.v3." + context_type,
            **context,
        },
    }


def _certificate(cert_file: str, key_file: str) -> dict[str, Any]:
    # Absolute paths: Envoy runs in its own run directory.
    return {
        "certificate_chain": {"filename": str(Path(cert_file).resolve())},
        "private_key": {"filename": str(Path(key_file).resolve())},
    }


def _downstream_tls(tls: RestTlsConfig) -> dict[str, Any]:
    """REST over TLS (HTTP/1.1 and HTTP/2 by ALPN), TLS 1.2 at least."""
    return _tls_socket(
        "DownstreamTlsContext",
        {
            "common_tls_context": {
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                "tls_certificates": [_certificate(tls.cert_file, tls.key_file)],
                "alpn_protocols": ["h2", "http/1.1"],
            }
        },
    )


def _upstream_tls(tls: RestTlsConfig, host: str) -> dict[str, Any]:
    """Envoy to a gRPC server that serves TLS: verified against upstream_ca_file."""
    if not tls.upstream_ca_file:
        raise ConfigError("rest.tls.upstream_ca_file: required when the gRPC server uses TLS")
    common: dict[str, Any] = {
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
        "validation_context": {"trusted_ca": {"filename": str(Path(tls.upstream_ca_file).resolve())}},
        "alpn_protocols": ["h2"],
    }
    if tls.upstream_cert_file:
        common["tls_certificates"] = [_certificate(tls.upstream_cert_file, tls.upstream_key_file)]
    return _tls_socket("UpstreamTlsContext", {"common_tls_context": common, "sni": host})


# The gRPC server's own status, recorded for the access log. Envoy's
# %GRPC_STATUS% cannot give it: the transcoder turns the status into an HTTP
# code and drops grpc-status, and Envoy then guesses back from the HTTP code
# (404 becomes UNIMPLEMENTED, 400 INTERNAL). This filter sits just before the
# router, so on the way back it sees the server's response before the transcoder.
_GRPC_STATUS_LUA = """
function envoy_on_response(handle)
  local status = handle:headers():get("grpc-status")
  if status == nil then
    for _ in handle:bodyChunks() do end  -- passes every chunk on as it comes
    local trailers = handle:trailers()
    if trailers ~= nil then status = trailers:get("grpc-status") end
  end
  if status ~= nil and tonumber(status) ~= nil then
    handle:streamInfo():dynamicMetadata():set("callcontrol.grpc", "status", tonumber(status))
  end
end
"""
_GRPC_STATUS_FILTER = {
    "name": "callcontrol.grpc_status",
    "typed_config": {
        "@type": _T + "envoy.extensions.filters.http.lua.v3.Lua",
        "default_source_code": {"inline_string": _GRPC_STATUS_LUA},
    },
}


def _with_grpc_status_recorder(filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``filters`` with the status recorder inserted right before the router (the last)."""
    return [*filters[:-1], _GRPC_STATUS_FILTER, filters[-1]]


def _access_log(target: str) -> list[dict[str, Any]]:
    """Envoy's JSON access log to "stderr", "stdout", a file path, or nowhere ("off")."""
    if target == "off":
        return []
    # Never the API key; the app id and request id tie a line to the server's log.
    fields = {
        "time": "%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "app_id": "%REQ(X-APP-ID)%",
        "method": "%DYNAMIC_METADATA(callcontrol:method)%",
        "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
        "route": "%ROUTE_NAME%",
        "status": "%RESPONSE_CODE%",
        # null when Envoy answered itself (no route, rate limit, upstream down).
        "grpc_status": "%DYNAMIC_METADATA(callcontrol.grpc:status)%",
        "details": "%RESPONSE_CODE_DETAILS%",
        "flags": "%RESPONSE_FLAGS%",
        "duration_ms": "%DURATION%",
        "upstream_ms": "%RESPONSE_DURATION%",
        "bytes_in": "%BYTES_RECEIVED%",
        "bytes_out": "%BYTES_SENT%",
        "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
        "user_agent": "%REQ(USER-AGENT)%",
    }
    log_format = {"json_format": fields}
    # Load-balancer probes of /healthz would drown the lines that matter.
    not_health: dict[str, Any] = {"not_health_check_filter": {}}
    stream = "envoy.extensions.access_loggers.stream.v3."
    if target == "stdout":
        name, typed = "envoy.access_loggers.stdout", {"@type": _T + stream + "StdoutAccessLog"}
    elif target == "stderr":
        name, typed = "envoy.access_loggers.stderr", {"@type": _T + stream + "StderrAccessLog"}
    else:
        name = "envoy.access_loggers.file"
        typed = {"@type": _T + "envoy.extensions.access_loggers.file.v3.FileAccessLog", "path": target}
    return [{"name": name, "filter": not_health, "typed_config": {**typed, "log_format": log_format}}]


def _http_filters(api: ApiDescriptor) -> list[dict[str, Any]]:
    return [
        {
            "name": LUA,
            "typed_config": {
                "@type": _T + "envoy.extensions.filters.http.lua.v3.Lua",
                "default_source_code": {"inline_string": _lua_source("rest.lua")},
            },
        },
        {
            "name": "envoy.filters.http.health_check",
            "typed_config": {
                "@type": _T + "envoy.extensions.filters.http.health_check.v3.HealthCheck",
                "pass_through_mode": False,
                # The path with or without a query string.
                "headers": [
                    {"name": ":path", "string_match": {"safe_regex": {"regex": HEALTH_PATH_REGEX}}},
                    READ_METHODS,
                ],
                "cluster_min_healthy_percentages": {CLUSTER: {"value": 100.0}},
            },
        },
        {
            "name": TRANSCODER,
            "typed_config": {
                "@type": _T + "envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
                "proto_descriptor": str(api.path),
                "services": list(api.services),
                "print_options": {
                    "preserve_proto_field_names": True,
                    "always_print_primitive_fields": True,
                    "stream_newline_delimited": True,
                },
                "match_incoming_request_route": True,
                "convert_grpc_status": True,
                "request_validation_options": {
                    "reject_unknown_method": True,
                    "reject_unknown_query_parameters": True,
                    "reject_binding_body_field_collisions": True,
                },
                "max_request_body_size": MAX_REQUEST_BODY_BYTES,
                # A unary response is buffered whole to be transcoded; the default cap
                # (the connection buffer) is smaller than a full page of a list.
                "max_response_body_size": MAX_RESPONSE_BODY_BYTES,
            },
        },
        {
            "name": "envoy.filters.http.router",
            # No x-envoy-upstream-service-time (or other x-envoy-*) in responses.
            "typed_config": {
                "@type": _T + "envoy.extensions.filters.http.router.v3.Router",
                "suppress_envoy_headers": True,
            },
        },
    ]


def _cluster(
    grpc_address: Address, health_check_interval_ms: int, upstream_tls: RestTlsConfig | None = None
) -> dict[str, Any]:
    host, is_ip = _upstream_host(grpc_address)
    interval = f"{health_check_interval_ms / 1000:.3f}s"
    cluster = {
        "name": CLUSTER,
        "type": "STATIC" if is_ip else "STRICT_DNS",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _T + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {
                    "http2_protocol_options": {
                        # Notice a silently dead server connection instead of waiting on it.
                        "connection_keepalive": {"interval": "30s", "timeout": "5s"},
                    }
                },
            }
        },
        "load_assignment": {
            "cluster_name": CLUSTER,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": _socket(Address(host, grpc_address.port))}}]}
            ],
        },
        "health_checks": [
            {
                "timeout": "1s",
                "interval": interval,
                # Without this a host that failed its first check stays failed for 60 s.
                "no_traffic_interval": interval,
                "unhealthy_threshold": 1,
                "healthy_threshold": 1,
                "grpc_health_check": {},
            }
        ],
        "circuit_breakers": {
            "thresholds": [{"max_connections": 1024, "max_pending_requests": 4096, "max_requests": 10000}]
        },
    }
    if upstream_tls is not None:
        cluster["transport_socket"] = _upstream_tls(upstream_tls, host)
    return cluster


def render_envoy_config(
    rest: RestConfig,
    grpc_address: Address,
    *,
    openapi_file: Path,
    api: ApiDescriptor | None = None,
    access_log_path: Path | None = None,
    health_check_interval_ms: int = 1000,
    upstream_tls: bool = False,
) -> str:
    """The bootstrap as JSON text.

    ``upstream_tls``: the gRPC server serves TLS, so Envoy connects with TLS too
    (``rest.tls.upstream_*``). ``rest.tls.cert_file`` set: REST is served over TLS.

    ``openapi_file`` is served at ``/openapi.json`` (write it with
    ``callcontrol.rest.openapi``); ``access_log_path`` overrides ``rest.access_log``.
    Raises ``ConfigError`` for an admin address off loopback.
    """
    if not _is_loopback(rest.admin.host):
        raise ConfigError(f"rest.admin: Envoy's admin must listen on loopback, got {rest.admin.host!r}")
    if health_check_interval_ms < 10:
        raise ConfigError("health_check_interval_ms: at least 10")
    api = api or load_api()
    hcm = {
        "@type": _T + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "rest",
        "codec_type": "AUTO",
        "server_name": "callcontrol",
        # Edge proxy: trust the peer address, keep a caller's x-request-id, and always
        # hand the id back so a client can quote it.
        "use_remote_address": True,
        "generate_request_id": True,
        "preserve_external_request_id": True,
        "always_set_request_id_in_response": True,
        "normalize_path": True,
        "merge_slashes": True,
        # An encoded slash stays inside its path segment and reaches the server, which
        # names the malformed field (a rejection here would be an empty-bodied 400).
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
        "request_headers_timeout": "10s",
        "stream_idle_timeout": f"{STREAM_IDLE_TIMEOUT_S}s",
        "common_http_protocol_options": {
            "idle_timeout": "300s",
            "headers_with_underscores_action": "DROP_HEADER",
        },
        "access_log": _access_log(str(access_log_path) if access_log_path else rest.access_log),
        "local_reply_config": local_reply_config(),
        "route_config": {
            "name": "rest",
            # The OpenAPI document is served as a direct response; allow it to be large.
            "max_direct_response_body_size_bytes": 4 * 1024 * 1024,
            "virtual_hosts": [
                {"name": "callcontrol", "domains": ["*"], "routes": build_routes(api, openapi_file)}
            ],
        },
        "http_filters": _with_grpc_status_recorder(_http_filters(api)),
    }
    bootstrap = {
        "node": {"id": "callcontrol-rest", "cluster": "callcontrol"},
        "admin": {"address": _socket(rest.admin)},
        "static_resources": {
            "listeners": [
                {
                    "name": "rest",
                    "address": _socket(rest.listen),
                    "per_connection_buffer_limit_bytes": 64 * 1024,
                    # A second Envoy (a stale one, say) must fail to bind, not share the port.
                    "enable_reuse_port": False,
                    "filter_chains": [
                        {
                            "filters": [
                                {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                            ],
                            **({"transport_socket": _downstream_tls(rest.tls)} if rest.tls.enabled else {}),
                        }
                    ],
                }
            ],
            "clusters": [
                _cluster(grpc_address, health_check_interval_ms, rest.tls if upstream_tls else None)
            ],
        },
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": _T + _CONNECTIONS_MONITOR,
                        "max_active_downstream_connections": 50000,
                    },
                }
            ]
        },
    }
    return json.dumps(bootstrap, indent=2) + "\n"
