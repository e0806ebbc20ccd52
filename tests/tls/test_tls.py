"""TLS with certificates generated at run time: gRPC (and mTLS), Envoy's REST, Envoy→gateway."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

from callcontrol.config import ConfigError, GatewayConfig, GrpcTlsConfig, RestTlsConfig
from callcontrol.events import CommandResult, Subscription
from callcontrol.gateway import Gateway
from callcontrol.rest.envoy_config import render_envoy_config
from callcontrol.rest.envoy_process import EnvoyProcess
from callcontrol.simulator import FreeSwitchSimulator
from callcontrol.v1 import sessions_pb2, sessions_pb2_grpc
from tests.conftest import DEMO_AUTH, make_config, next_event
from tests.rest.conftest import DEMO_HEADERS, rest_config


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA certificate (what clients trust)
    cert: Path  # server chain for 127.0.0.1 / localhost
    key: Path
    client_cert: Path  # a client certificate from the same CA (for mTLS)
    client_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("envoy.callcontrol.test")
    files = Pki(*(root / n for n in ("ca.pem", "cert.pem", "key.pem", "client.pem", "client-key.pem")))
    ca.cert_pem.write_to_path(str(files.ca))
    files.cert.write_bytes(b"".join(p.bytes() for p in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(files.key))
    files.client_cert.write_bytes(b"".join(p.bytes() for p in client.cert_chain_pems))
    client.private_key_pem.write_to_path(str(files.client_key))
    return files


@pytest.fixture
def config(pki: Pki, request: pytest.FixtureRequest) -> GatewayConfig:
    mtls = getattr(request, "param", False)
    tls = GrpcTlsConfig(str(pki.cert), str(pki.key), str(pki.ca) if mtls else "")
    return make_config(grpc_tls=tls)


def _credentials(pki: Pki, *, client_cert: bool = False) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=pki.client_key.read_bytes() if client_cert else None,
        certificate_chain=pki.client_cert.read_bytes() if client_cert else None,
    )


async def _list_sessions(target: str, credentials: grpc.ChannelCredentials | None) -> int:
    channel = (
        grpc.aio.secure_channel(target, credentials)
        if credentials is not None
        else grpc.aio.insecure_channel(target)
    )
    async with channel:
        stub = sessions_pb2_grpc.SessionsStub(channel)
        reply = await stub.ListSessions(sessions_pb2.ListSessionsRequest(), metadata=DEMO_AUTH, timeout=5)
        return len(reply.sessions)


async def test_grpc_serves_tls_and_refuses_plaintext(gateway: Gateway, pki: Pki) -> None:
    target = f"localhost:{gateway.grpc_address.port}" if gateway.grpc_address else ""
    assert await _list_sessions(target, _credentials(pki)) == 0
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _list_sessions(target, None)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("config", [True], indirect=True)
async def test_grpc_mtls_wants_a_client_certificate_from_the_ca(gateway: Gateway, pki: Pki) -> None:
    target = f"localhost:{gateway.grpc_address.port}" if gateway.grpc_address else ""
    assert await _list_sessions(target, _credentials(pki, client_cert=True)) == 0
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _list_sessions(target, _credentials(pki))
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE


@pytest.fixture
async def tls_envoy(gateway: Gateway, pki: Pki, tmp_path: Path) -> AsyncIterator[EnvoyProcess]:
    """Envoy serving REST over TLS and reaching the TLS gRPC server over TLS (with a client cert)."""
    assert gateway.grpc_address is not None
    tls = RestTlsConfig(
        cert_file=str(pki.cert),
        key_file=str(pki.key),
        upstream_ca_file=str(pki.ca),
        upstream_cert_file=str(pki.client_cert),
        upstream_key_file=str(pki.client_key),
    )
    envoy = EnvoyProcess(
        replace(rest_config(), tls=tls),
        gateway.grpc_address,
        tmp_path / "envoy",
        concurrency=1,
        upstream_tls=True,
    )
    try:
        await envoy.start()
        await envoy.wait_healthy(timeout=15)
        yield envoy
    finally:
        await envoy.stop()


@pytest.mark.parametrize("config", [False, True], indirect=True, ids=["tls", "mtls"])
async def test_rest_over_tls_through_envoy_to_the_tls_grpc_server(
    tls_envoy: EnvoyProcess, gateway: Gateway, pki: Pki, events: Subscription
) -> None:
    assert tls_envoy.rest_url.startswith("https://")
    assert gateway.esl_address is not None
    simulator = FreeSwitchSimulator(gateway.esl_address.host, gateway.esl_address.port)
    try:
        call = await simulator.place_call()
        trust = ssl.create_default_context(cafile=str(pki.ca))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
            url = f"{tls_envoy.rest_url}/api/v1/sessions/{call.uuid}/commands/answer"
            async with http.post(url, headers=DEMO_HEADERS, json={}, ssl=trust) as response:
                assert response.status == 202, await response.text()
                body = json.loads(await response.text())
            result = await next_event(events, CommandResult, call.uuid)
            assert (result.operation_id, result.status) == (body["operation_id"], "succeeded")
            # Plain HTTP to the TLS listener gets no answer.
            plain = tls_envoy.rest_url.replace("https://", "http://") + "/healthz"
            with pytest.raises(aiohttp.ClientError):
                async with http.get(plain) as response:
                    await response.read()
            # A client that does not trust the CA refuses the server.
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with http.get(f"{tls_envoy.rest_url}/healthz", ssl=ssl.create_default_context()) as r:
                    await r.read()
    finally:
        await simulator.close()


async def test_grpc_health_over_tls(gateway: Gateway, pki: Pki) -> None:
    assert gateway.grpc_address is not None
    target = f"127.0.0.1:{gateway.grpc_address.port}"
    async with grpc.aio.secure_channel(target, _credentials(pki)) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_envoy_needs_a_ca_to_reach_a_tls_grpc_server(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"rest\.tls\.upstream_ca_file"):
        render_envoy_config(
            rest_config(), make_config().grpc_listen, openapi_file=tmp_path / "o.json", upstream_tls=True
        )


async def test_a_missing_certificate_stops_the_gateway_before_it_binds(tmp_path: Path) -> None:
    tls = GrpcTlsConfig(str(tmp_path / "gone.pem"), str(tmp_path / "gone-key.pem"))
    with pytest.raises(ConfigError, match=r"grpc\.tls\.key_file"):
        Gateway(make_config(grpc_tls=tls))
