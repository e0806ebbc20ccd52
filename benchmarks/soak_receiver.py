"""The soak's webhook receivers, in their own process: one port per application.

Healthy applications acknowledge at once. The application named ``--flaky``
misbehaves while the soak runs: answers 503 (with ``Retry-After: 1``) or stalls
past the gateway's request timeout, and acknowledges the rest; ``POST /heal``
on any port makes it healthy so that the drain can finish. ``GET /stats`` on
any port returns every webhook received, per application, as JSON.

    python benchmarks/soak_receiver.py --apps app-1,app-2,flaky --flaky flaky

Prints one line ``listening <app> <port>`` per application, then ``ready``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web


@dataclass
class Received:
    event_id: str
    type: str
    session_id: str
    operation_id: str | None
    command: str | None
    status: str | None
    cause: str | None
    latency_ms: float  # receipt minus the event's occurred_at (same machine clock)


@dataclass
class State:
    flaky: str
    stall_s: float
    healed: bool = False
    received: dict[str, list[Received]] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    rng: random.Random = field(default_factory=lambda: random.Random(7))  # noqa: S311 - not secrets


def _occurred(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _handler(state: State, app_id: str) -> Any:
    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        if app_id == state.flaky and not state.healed:
            roll = state.rng.random()
            if roll < 0.3:
                state.refused[app_id] = state.refused.get(app_id, 0) + 1
                return web.Response(status=503, headers={"Retry-After": "1"})
            if roll < 0.4:
                state.refused[app_id] = state.refused.get(app_id, 0) + 1
                await asyncio.sleep(state.stall_s)  # past the gateway's timeout: it gives up on us
                return web.Response(status=504)
        event = json.loads(body)
        data = event.get("data") or {}
        state.received.setdefault(app_id, []).append(
            Received(
                event_id=event["id"],
                type=event["type"],
                session_id=event["session_id"],
                operation_id=data.get("operation_id"),
                command=data.get("command"),
                cause=data.get("cause"),
                status=data.get("status"),
                latency_ms=(time.time() - _occurred(event["occurred_at"])) * 1000,
            )
        )
        return web.Response(status=204)

    return receive


async def main(apps: list[str], flaky: str, stall_s: float) -> None:
    state = State(flaky=flaky, stall_s=stall_s)

    async def stats(_: web.Request) -> web.Response:
        payload = {
            "received": {app: [r.__dict__ for r in rows] for app, rows in state.received.items()},
            "refused": state.refused,
        }
        return web.json_response(payload)

    async def heal(_: web.Request) -> web.Response:
        state.healed = True
        return web.Response(status=204)

    runners = []
    for app_id in apps:
        app = web.Application()
        app.router.add_post("/hooks", _handler(state, app_id))
        app.router.add_get("/stats", stats)
        app.router.add_post("/heal", heal)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        print(f"listening {app_id} {runner.addresses[0][1]}", flush=True)
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for runner in runners:
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--apps", required=True, help="comma-separated application ids")
    parser.add_argument("--flaky", default="", help="the application whose receiver misbehaves")
    parser.add_argument("--stall-s", type=float, default=2.0, help="how long a stalled answer takes")
    args = parser.parse_args()
    asyncio.run(main(args.apps.split(","), args.flaky, args.stall_s))
