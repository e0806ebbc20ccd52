"""EnvoyProcess and /healthz: start, health that follows the gRPC server, stop, side by side."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from callcontrol.config import Address
from callcontrol.rest import EnvoyError, EnvoyProcess, find_envoy_binary, validate_config
from tests.rest.conftest import EnvoyFactory, RestClient, eventually, rest_config


async def test_healthz_is_200_while_the_gateway_serves_and_503_once_it_stops(
    gateway: Any, rest: RestClient, envoy: EnvoyProcess
) -> None:
    healthy = await rest.get("/healthz", headers={})
    assert healthy.status == 200
    assert healthy.json() == {"status": "SERVING"}
    assert healthy.headers["x-request-id"]
    assert not [h for h in healthy.headers if h.startswith(("x-envoy-upstream-healthchecked", "grpc-"))]

    await gateway.shutdown()

    async def unhealthy() -> bool:
        return (await rest.get("/healthz", headers={})).status == 503

    await eventually(unhealthy, "/healthz to report the stopped gateway")
    reply = await rest.get("/healthz", headers={})
    body = reply.json()
    assert set(body) == {"code", "message", "details"}
    assert body["code"] == 14
    assert not await envoy.healthy()


async def test_healthz_is_503_when_the_grpc_server_was_never_there(
    envoy_factory: EnvoyFactory, refused_port: Address, http: aiohttp.ClientSession
) -> None:
    envoy = await envoy_factory(refused_port, healthy=False)
    rest = RestClient(http, envoy.rest_url)

    reply = await rest.get("/healthz", headers={})

    assert reply.status == 503
    assert reply.json()["code"] == 14
    with pytest.raises(EnvoyError, match="healthz"):
        await envoy.wait_healthy(timeout=0.5)


async def test_two_envoys_run_side_by_side_on_their_own_ports(
    gateway: Any, envoy_factory: EnvoyFactory, http: aiohttp.ClientSession
) -> None:
    first, second = await asyncio.gather(
        envoy_factory(gateway.grpc_address), envoy_factory(gateway.grpc_address)
    )

    assert first.rest_address != second.rest_address
    assert first.admin_address != second.admin_address
    for envoy in (first, second):
        assert envoy.admin_address.host == "127.0.0.1"
        assert (await RestClient(http, envoy.rest_url).get("/healthz", headers={})).status == 200


async def test_stop_terminates_envoy_and_is_idempotent(gateway: Any, tmp_path: Path) -> None:
    envoy = EnvoyProcess(rest_config(), gateway.grpc_address, tmp_path / "run", concurrency=1)
    await envoy.start()
    pid = envoy.pid
    assert pid is not None

    first = await envoy.stop()
    second = await envoy.stop()

    assert first == second == 0  # Envoy exits cleanly on SIGTERM
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_start_reports_envoys_own_words_when_it_cannot_start(
    gateway: Any, tmp_path: Path, refused_port: Address
) -> None:
    taken = replace(rest_config(), listen=refused_port)  # bound by the fixture's socket
    envoy = EnvoyProcess(taken, gateway.grpc_address, tmp_path / "run", concurrency=1)

    with pytest.raises(EnvoyError, match="exited") as error:
        await envoy.start(timeout=10)

    assert envoy.returncode not in (None, 0)
    assert "address already in use" in str(error.value).lower()


async def test_the_run_dir_holds_the_rendered_config_which_envoy_validates(
    gateway: Any, envoy: EnvoyProcess
) -> None:
    assert envoy.files is not None
    config = json.loads(envoy.files.config.read_text())

    await validate_config(envoy.files.config)
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    assert json.loads(envoy.files.openapi.read_text())["openapi"].startswith("3.")


async def test_the_binary_is_found_beside_the_interpreter() -> None:
    binary = find_envoy_binary()

    proc = await asyncio.create_subprocess_exec(binary, "--version", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()

    assert b"1.40." in out


async def test_a_killed_envoy_is_reported_not_waited_for(gateway: Any, envoy: EnvoyProcess) -> None:
    assert envoy.pid is not None
    os.kill(envoy.pid, signal.SIGKILL)

    with pytest.raises(EnvoyError, match="exited"):
        await envoy.wait_healthy(timeout=10)
