"""The rendered bootstrap: what the contract needs is in it, derived from the descriptor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

import callcontrol.rest
from callcontrol.config import Address, ConfigError, RestConfig
from callcontrol.rest import load_api, render_envoy_config, validate_config
from callcontrol.rest.descriptor import default_descriptor_path

GRPC = Address("127.0.0.1", 50051)


OPENAPI_FILE = Path("/run/callcontrol/openapi.json")


def _render(rest: RestConfig | None = None, **kwargs: Any) -> dict[str, Any]:
    text = render_envoy_config(rest or RestConfig(), GRPC, openapi_file=OPENAPI_FILE, **kwargs)
    return dict(json.loads(text))


def _hcm(config: dict[str, Any]) -> dict[str, Any]:
    [listener] = config["static_resources"]["listeners"]
    return dict(listener["filter_chains"][0]["filters"][0]["typed_config"])


def _filter(config: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [f["typed_config"] for f in _hcm(config)["http_filters"] if f["name"] == name]
    return dict(found)


def _routes(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in _hcm(config)["route_config"]["virtual_hosts"][0]["routes"]}


def test_listener_and_admin_come_from_rest_config() -> None:
    config = _render(RestConfig(listen=Address("0.0.0.0", 8443), admin=Address("127.0.0.1", 9911)))

    [listener] = config["static_resources"]["listeners"]
    assert listener["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 8443}
    assert config["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9911}


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "example.com"])
def test_admin_off_loopback_is_refused(host: str) -> None:
    with pytest.raises(ConfigError, match=r"rest\.admin"):
        _render(RestConfig(admin=Address(host, 9901)))


def test_the_transcoder_covers_every_service_with_the_contract_options() -> None:
    transcoder = _filter(_render(), "envoy.filters.http.grpc_json_transcoder")

    assert transcoder["services"] == list(load_api().services)
    assert {"callcontrol.v1.SessionCommands", "callcontrol.v1.Operations", "callcontrol.v1.Sessions"} <= set(
        transcoder["services"]
    )
    assert transcoder["proto_descriptor"] == str(default_descriptor_path())
    assert transcoder["print_options"] == {
        "preserve_proto_field_names": True,
        "always_print_primitive_fields": True,
        "stream_newline_delimited": True,
    }
    assert transcoder["match_incoming_request_route"] is True
    assert transcoder["convert_grpc_status"] is True
    assert transcoder["request_validation_options"] == {
        "reject_unknown_method": True,
        "reject_unknown_query_parameters": True,
        "reject_binding_body_field_collisions": True,
    }
    assert transcoder["max_request_body_size"] > 0


def test_filters_run_in_the_order_the_202_and_health_need() -> None:
    names = [f["name"] for f in _hcm(_render())["http_filters"]]

    assert names == [
        "envoy.filters.http.lua",  # before the transcoder: sees the transcoded response
        "envoy.filters.http.health_check",
        "envoy.filters.http.grpc_json_transcoder",
        "callcontrol.grpc_status",  # after the transcoder: sees the server's grpc-status
        "envoy.filters.http.router",
    ]


def test_only_the_envelope_commands_answer_202_and_are_never_retried_once_sent() -> None:
    routes = _routes(_render())
    commands = [r for name, r in routes.items() if name.startswith("callcontrol.v1.SessionCommands.")]

    assert len(commands) == 3
    for route in commands:
        assert route["metadata"]["filter_metadata"]["envoy.filters.http.lua"]["success_status"] == "202"
        assert set(route["route"]["retry_policy"]["retry_on"].split(",")) <= {
            "connect-failure",
            "refused-stream",
        }
    others = [r for name, r in routes.items() if r not in commands and "route" in r]
    assert others
    for route in others:
        lua = route.get("metadata", {}).get("filter_metadata", {}).get("envoy.filters.http.lua", {})
        assert "success_status" not in lua, route["name"]
        if route["match"]["headers"][0]["string_match"]["exact"] != "GET":
            assert "unavailable" not in route["route"]["retry_policy"]["retry_on"], route["name"]


def test_the_watch_route_has_no_deadline_but_an_idle_timeout_and_streams_ndjson() -> None:
    watch = _routes(_render())["callcontrol.v1.Operations.WatchOperation"]

    assert watch["route"]["timeout"] == "0s"
    assert watch["route"]["idle_timeout"] != "0s"
    assert watch["metadata"]["filter_metadata"]["envoy.filters.http.lua"] == {
        "success_content_type": "application/x-ndjson"
    }


def test_envoy_limits_nothing_and_tells_the_server_the_client_address() -> None:
    # One limiter, in the server, after authentication: a limiter here keyed on the
    # raw X-App-ID let an unauthenticated client spend an application's budget.
    hcm = _hcm(_render())

    assert not [f for f in hcm["http_filters"] if "ratelimit" in f["name"]]
    # Envoy appends the peer it accepted to X-Forwarded-For; the server reads the last entry.
    assert hcm["use_remote_address"] is True
    assert hcm.get("skip_xff_append", False) is False
    assert hcm.get("xff_num_trusted_hops", 0) == 0


def test_body_routes_list_the_fields_their_body_may_have_in_both_spellings() -> None:
    routes = _routes(_render())

    hangup = routes["callcontrol.v1.SessionCommands.Hangup"]["metadata"]["filter_metadata"]
    assert set(hangup["envoy.filters.http.lua"]["body_fields"]) == {
        "session_id",
        "sessionId",
        "command_uid",
        "commandUid",
        "cause",
    }
    get = routes["callcontrol.v1.Sessions.GetSession"]
    assert "body_fields" not in get.get("metadata", {}).get("filter_metadata", {}).get(
        "envoy.filters.http.lua", {}
    )


def test_a_known_path_with_another_method_is_405_with_allow() -> None:
    routes = list(_routes(_render()).values())
    names = [r["name"] for r in routes]
    hangup_regex = _routes(_render())["callcontrol.v1.SessionCommands.Hangup"]["match"]["safe_regex"]["regex"]

    [fallback] = [
        r
        for r in routes
        if r["name"].startswith("method_not_allowed") and r["match"]["safe_regex"]["regex"] == hangup_regex
    ]
    assert fallback["direct_response"]["status"] == 405
    assert fallback["response_headers_to_add"][0]["header"] == {"key": "allow", "value": "POST"}
    # After every API route, before the catch-all 404.
    assert names.index(fallback["name"]) > names.index("callcontrol.v1.SessionCommands.Hangup")
    assert names.index(fallback["name"]) < names.index("not_found")


def test_infrastructure_routes_bypass_the_transcoder() -> None:
    routes = _routes(_render())

    for name in ("healthz", "openapi", "not_found"):
        per_filter = routes[name]["typed_per_filter_config"]["envoy.filters.http.grpc_json_transcoder"]
        assert per_filter["disabled"] is True
    assert routes["openapi"]["direct_response"]["body"] == {"filename": str(OPENAPI_FILE)}


def test_every_local_error_status_gets_the_json_error_shape() -> None:
    mappers = _hcm(_render())["local_reply_config"]["mappers"]
    statuses = {
        m["filter"]["status_code_filter"]["comparison"]["value"]["default_value"]
        for m in mappers
        if "status_code_filter" in m["filter"]
    }

    assert {400, 404, 405, 413, 503} <= statuses
    for mapper in mappers[1:]:
        assert set(mapper["body_format_override"]["json_format"]) == {"code", "message", "details"}


def test_a_new_service_in_the_descriptor_is_routed_without_code_changes(tmp_path: Path) -> None:
    descriptor = _descriptor_with_extra_service(tmp_path)

    api = load_api(descriptor)
    config = _render(api=api)

    assert "callcontrol.v1.Extra" in _filter(config, "envoy.filters.http.grpc_json_transcoder")["services"]
    route = _routes(config)["callcontrol.v1.Extra.Ping"]
    assert route["match"]["safe_regex"]["regex"] == "^/api/v1/extras/[^/]+/ping$"
    document = callcontrol.rest.build_openapi(api)
    assert "post" in document["paths"]["/api/v1/extras/{extra_id}/ping"]


async def test_envoy_accepts_the_rendered_config(tmp_path: Path) -> None:
    path = tmp_path / "envoy.json"
    (tmp_path / "openapi.json").write_text("{}")
    path.write_text(
        render_envoy_config(
            RestConfig(), GRPC, openapi_file=tmp_path / "openapi.json", access_log_path=tmp_path / "a.log"
        )
    )

    await validate_config(path)


def test_the_public_surface_is_complete() -> None:
    public = {name for name in dir(callcontrol.rest) if not name.startswith("_")}
    modules = {
        "descriptor",
        "envoy_config",
        "envoy_process",
        "envoy_replies",
        "envoy_routes",
        "json_schema",
        "openapi",
    }

    assert set(callcontrol.rest.__all__) == public - modules


def _descriptor_with_extra_service(tmp_path: Path) -> Path:
    """The real descriptor set plus a file declaring one more annotated service."""
    files = descriptor_pb2.FileDescriptorSet.FromString(default_descriptor_path().read_bytes())
    extra = files.file.add(name="callcontrol/v1/extra.proto", package="callcontrol.v1", syntax="proto3")
    extra.dependency.append("google/api/annotations.proto")
    request = extra.message_type.add(name="PingRequest")
    request.field.add(
        name="extra_id",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    extra.message_type.add(name="PingReply")
    service = extra.service.add(name="Extra")
    method = service.method.add(
        name="Ping", input_type=".callcontrol.v1.PingRequest", output_type=".callcontrol.v1.PingReply"
    )
    method.options.Extensions[annotations_pb2.http].CopyFrom(
        http_pb2.HttpRule(post="/api/v1/extras/{extra_id}/ping", body="*")
    )
    path = tmp_path / "extra.pb"
    path.write_bytes(files.SerializeToString())
    return path
