"""What Envoy costs: start-to-healthy time, and sequential request latency REST vs direct gRPC.

    PYTHONPATH=server .venv/bin/python -m tests.rest.bench_rest [requests]

Starts a real gateway (port 0) and a real Envoy in front of it, then times N
sequential ListSessions calls both ways on warm keep-alive connections. Not a
test (nothing asserted); numbers for the README and the report.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import grpc

from callcontrol.config import DEMO_API_KEY, DEMO_APP_ID
from callcontrol.gateway import Gateway
from callcontrol.rest import EnvoyProcess
from callcontrol.v1 import sessions_pb2, sessions_pb2_grpc
from tests.conftest import make_config
from tests.rest.conftest import rest_config


async def _timed(n: int, call: Callable[[], Awaitable[None]]) -> list[float]:
    for _ in range(20):  # warm up connections and code paths
        await call()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def _summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[max(0, round(len(ordered) * 0.99) - 1)]
    median, mean = statistics.median(samples), statistics.fmean(samples)
    return f"{name:>14}: median {median:6.3f} ms  mean {mean:6.3f} ms  p99 {p99:6.3f} ms"


async def main(n: int) -> None:
    gateway = Gateway(make_config())
    await gateway.start()
    assert gateway.grpc_address is not None
    try:
        with tempfile.TemporaryDirectory() as run_dir:
            started = time.perf_counter()
            envoy = EnvoyProcess(rest_config(), gateway.grpc_address, Path(run_dir), concurrency=2)
            await envoy.start()
            listening = time.perf_counter()
            await envoy.wait_healthy()
            healthy = time.perf_counter()
            to_listen, to_healthy = 1000 * (listening - started), 1000 * (healthy - started)
            print(f"envoy start -> listening {to_listen:.0f} ms, -> healthy {to_healthy:.0f} ms")
            try:
                metadata = (("x-app-id", DEMO_APP_ID), ("x-api-key", DEMO_API_KEY))
                async with grpc.aio.insecure_channel(str(gateway.grpc_address)) as channel:
                    stub = sessions_pb2_grpc.SessionsStub(channel)

                    async def direct() -> None:
                        await stub.ListSessions(sessions_pb2.ListSessionsRequest(), metadata=metadata)

                    grpc_ms = await _timed(n, direct)
                headers = {"X-App-ID": DEMO_APP_ID, "X-API-Key": DEMO_API_KEY}
                async with aiohttp.ClientSession() as http:
                    url = f"{envoy.rest_url}/api/v1/sessions"

                    async def through_envoy() -> None:
                        async with http.get(url, headers=headers) as response:
                            await response.read()
                            assert response.status == 200

                    rest_ms = await _timed(n, through_envoy)
            finally:
                await envoy.stop()
    finally:
        await gateway.shutdown()
    print(f"{n} sequential ListSessions")
    print(_summary("direct gRPC", grpc_ms))
    print(_summary("REST via Envoy", rest_ms))
    ratio = statistics.median(rest_ms) / statistics.median(grpc_ms)
    added = statistics.median(rest_ms) - statistics.median(grpc_ms)
    print(f"median ratio REST/gRPC {ratio:.2f}x, added {added:.3f} ms per request")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
