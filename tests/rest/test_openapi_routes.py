"""/openapi.json against the routes the running Envoy really serves, both ways."""

from __future__ import annotations

import re
import uuid
from typing import Any

import aiohttp

from callcontrol.rest import EnvoyProcess, render_openapi
from tests.rest.conftest import JSON_HEADERS, RestClient

METHODS = {"get", "post", "put", "patch", "delete"}


def _sample_path(template: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), template)


def _operations(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    ]


async def _live_routes(http: aiohttp.ClientSession, envoy: EnvoyProcess) -> list[dict[str, Any]]:
    """The route table from Envoy's admin config_dump (what is loaded, not what was written)."""
    async with http.get(f"{envoy.admin_url}/config_dump?resource=static_listeners") as response:
        dump = await response.json()
    [listener] = [c["listener"] for c in dump["configs"] if c["listener"]["name"] == "rest"]
    [hcm] = [f["typed_config"] for f in listener["filter_chains"][0]["filters"]]
    [vhost] = hcm["route_config"]["virtual_hosts"]
    return list(vhost["routes"])


def _route_matches(route: dict[str, Any], method: str, path: str) -> bool:
    match = route["match"]
    for header in match.get("headers", []):
        if header["name"] != ":method":
            continue
        wanted = header["string_match"]
        if "exact" in wanted and method != wanted["exact"]:
            return False
        if "safe_regex" in wanted and not re.fullmatch(wanted["safe_regex"]["regex"], method):
            return False
    if "path" in match:
        return bool(path == match["path"])
    if "safe_regex" in match:
        return re.fullmatch(match["safe_regex"]["regex"], path) is not None
    return bool(path.startswith(match.get("prefix", "\0")))


def _route_for(routes: list[dict[str, Any]], method: str, path: str) -> str:
    """The name of the first route Envoy would pick (routes match in order)."""
    return str(next(r["name"] for r in routes if _route_matches(r, method, path)))


async def test_openapi_json_is_served_and_is_the_generated_document(rest: RestClient) -> None:
    reply = await rest.get("/openapi.json", headers={})

    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == __import__("json").loads(render_openapi())


async def test_every_documented_operation_has_a_route_and_every_route_is_documented(
    rest: RestClient, envoy: EnvoyProcess
) -> None:
    document = (await rest.get("/openapi.json", headers={})).json()
    routes = await _live_routes(rest.http, envoy)
    operations = _operations(document)

    for method, path in operations:
        assert _route_for(routes, method, _sample_path(path)) != "not_found", (method, path)

    for route in routes:
        if route["name"] == "not_found" or route["name"].endswith("405") or "not_allowed" in route["name"]:
            continue  # the catch-all and the 405 answers of documented paths
        documented = [
            (m, p) for m, p in operations if _route_for(routes, m, _sample_path(p)) == route["name"]
        ]
        assert documented, f"route {route['name']} is not in the OpenAPI document"
    assert routes[-1]["name"] == "not_found"  # the catch-all is last


async def test_every_documented_operation_reaches_its_handler_through_envoy(rest: RestClient) -> None:
    document = (await rest.get("/openapi.json", headers={})).json()

    for method, path in _operations(document):
        reply = await rest.request(
            method, _sample_path(path), headers=JSON_HEADERS, data="{}" if method != "GET" else None
        )
        # Unknown ids give the server's 404 (ResourceInfo) or a 2xx; never Envoy's route miss.
        assert reply.error_reason != "ROUTE_NOT_FOUND", (method, path, reply.status, reply.body)
        assert reply.status != 405, (method, path)
