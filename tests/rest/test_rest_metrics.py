"""REST requests are counted under their gRPC method: the transcoded call passes the same interceptor."""

from __future__ import annotations

from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from callcontrol.rest import EnvoyProcess
from tests.rest.conftest import RestClient, new_uuid


async def _handled(gateway: Any, method: str, code: str) -> float:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://{gateway.metrics_address}/metrics") as reply,
    ):
        text = await reply.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "callcontrol_grpc_server_handled_total"
                and sample.labels["grpc_method"] == method
                and sample.labels["grpc_code"] == code
            ):
                return float(sample.value)
    return 0.0


async def test_a_rest_route_is_counted_under_its_method_and_status(
    gateway: Any, rest: RestClient, envoy: EnvoyProcess
) -> None:
    before_ok = await _handled(gateway, "ListSessions", "OK")
    assert (await rest.get("/api/v1/sessions")).status == 200
    assert (await rest.get(f"/api/v1/sessions/{new_uuid()}")).status == 404

    assert await _handled(gateway, "ListSessions", "OK") == before_ok + 1
    assert await _handled(gateway, "GetSession", "NOT_FOUND") == 1
