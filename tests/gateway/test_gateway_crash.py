"""SIGKILL the whole gateway process with webhooks pending; the next start delivers them all."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

from aiohttp import web

from callcontrol import die_with_parent
from callcontrol.config import DEMO_API_KEY, DEMO_WEBHOOK_SECRET, Address
from callcontrol.simulator import FreeSwitchSimulator
from tests.webhooks.conftest import Received, Receiver

ROOT = Path(__file__).resolve().parents[2]
CALLS = 20
_ESL = re.compile(rb"outbound Event Socket listening on (\S+):(\d+)")


async def _start_gateway(config: Path, log: Path) -> tuple[asyncio.subprocess.Process, Address]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "server")}
    with log.open("ab") as stderr:
        proc = await asyncio.create_subprocess_exec(
            *die_with_parent.wrap(
                [sys.executable, "-m", "callcontrol", "--config", str(config), "--no-envoy"]
            ),
            cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip

    async def bound() -> Address:
        while True:
            if match := _ESL.search(await asyncio.to_thread(log.read_bytes)):
                return Address(match[1].decode(), int(match[2]))
            assert proc.returncode is None, "the gateway exited; see its log"
            await asyncio.sleep(0.05)  # polling the child's log for its port

    return proc, await asyncio.wait_for(bound(), 20)


async def test_sigkill_with_pending_webhooks_loses_nothing(receiver: Receiver, tmp_path: Path) -> None:
    async def unavailable(_: Received) -> web.StreamResponse:
        return web.Response(status=503, headers={"Retry-After": "1"})

    receiver.behaviour = unavailable
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[grpc]\nlisten = "127.0.0.1:0"\n[esl]\nlisten = "127.0.0.1:0"\n[metrics]\nlisten = "off"\n'
        f'[webhooks]\noutbox_path = "{tmp_path / "outbox.db"}"\n'
        f'[[applications]]\nid = "demo-app"\napi_key = "{DEMO_API_KEY}"\n'
        f'webhook_url = "{receiver.url}"\nwebhook_secrets = ["{DEMO_WEBHOOK_SECRET}"]\n'
    )
    log = tmp_path / "gateway.log"

    first, esl = await _start_gateway(config, log)
    sim = FreeSwitchSimulator(esl.host, esl.port)
    calls = [await sim.place_call() for _ in range(CALLS)]
    # Every call.initiated was tried (and refused) at least once: it was stored.
    await receiver.wait_for(
        lambda: {r.payload["session_id"] for r in receiver.requests} >= {c.uuid for c in calls}
    )
    first.send_signal(signal.SIGKILL)
    assert await first.wait() == -signal.SIGKILL
    await sim.close()
    first_ids = {r.payload["session_id"]: r.webhook_id for r in receiver.requests}
    receiver.requests.clear()

    async def accept(_: Received) -> web.StreamResponse:
        return web.Response(status=204)

    receiver.behaviour = accept
    second, _ = await _start_gateway(config, log)
    try:
        await receiver.wait_for(
            lambda: (
                {r.payload["session_id"] for r in receiver.requests if r.payload["type"] == "call.initiated"}
                >= {c.uuid for c in calls}
            ),
            within=20,
        )
    finally:
        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), 20) == 0
    initiated = [r for r in receiver.requests if r.payload["type"] == "call.initiated"]
    # Redelivered after the crash with the ids they were first sent with, each once.
    assert len({r.webhook_id for r in initiated}) == len(initiated) == CALLS
    assert all(r.webhook_id == first_ids[r.payload["session_id"]] for r in initiated)
