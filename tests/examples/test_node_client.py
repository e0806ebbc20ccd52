"""The Node.js example (@grpc/grpc-js, stubs from build/proto-bundle) against a real gateway."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import trustme

from callcontrol.config import GatewayConfig, GrpcTlsConfig
from callcontrol.events import CallAnswered, CallInitiated, Subscription
from callcontrol.gateway import Gateway
from callcontrol.simulator import FreeSwitchSimulator
from tests.conftest import make_config, next_event

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "node"


async def _node_client(*args: str) -> list[dict[str, Any]]:
    node = shutil.which("node")
    if node is None or not (EXAMPLE / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("node and examples/node/node_modules are needed: run scripts/setup")
    proc = await asyncio.create_subprocess_exec(
        node,
        str(EXAMPLE / "client.js"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()
    return [json.loads(line) for line in stdout.decode().splitlines()]


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    return tmp_path / "ca.pem"


@pytest.fixture
def config(request: pytest.FixtureRequest, ca_file: Path, tmp_path: Path) -> GatewayConfig:
    """Plaintext, or (param True) TLS with a certificate generated now."""
    if not getattr(request, "param", False):
        return make_config()
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(ca_file))
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(b"".join(p.bytes() for p in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(key))
    return make_config(grpc_tls=GrpcTlsConfig(str(cert), str(key)))


@pytest.mark.parametrize("config", [False, True], indirect=True, ids=["plaintext", "tls"])
async def test_node_client_answers_watches_hangs_up_and_decodes_error_details(
    gateway: Gateway,
    simulator: FreeSwitchSimulator,
    events: Subscription,
    config: GatewayConfig,
    ca_file: Path,
) -> None:
    call = await simulator.place_call()
    await next_event(events, CallInitiated, call.uuid)
    assert gateway.grpc_address is not None

    # No --session: the client finds the ringing call with ListSessions.
    tls = ["--ca", str(ca_file)] if config.grpc_tls.enabled else []
    steps = await _node_client("--target", str(gateway.grpc_address), "--cause", "USER_BUSY", *tls)

    by_step = {s.pop("step"): s for s in steps}
    assert list(by_step) == ["answer", "watch", "hangup", "invalid"]
    answer = by_step["answer"]
    assert answer["status"] == "in_progress"
    watched = by_step["watch"]
    assert watched["operation_id"] == answer["operation_id"]
    assert watched["statuses"][-1] == "succeeded"
    await next_event(events, CallAnswered, call.uuid)
    assert by_step["hangup"]["status"] == "in_progress"
    await call.wait_state("destroyed", timeout=5)
    assert call.hangup_cause == "USER_BUSY"

    invalid = by_step["invalid"]
    assert invalid["grpc_code"] == "INVALID_ARGUMENT"
    [bad_request] = [d for d in invalid["status"]["details"] if d["type"] == "google.rpc.BadRequest"]
    assert {v["field"] for v in bad_request["field_violations"]} == {"session_id", "cause"}
