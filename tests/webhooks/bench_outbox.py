"""Measure emit latency and delivery throughput (not a test; prints numbers).

PYTHONPATH=server .venv/bin/python -m tests.webhooks.bench_outbox [--events 10000] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from callcontrol.events import LifecycleEvent
from callcontrol.webhooks import WebhookService
from tests.webhooks.conftest import Receiver, answered, app, hangup, hook_config, initiated, session_id


def _events(count: int, app_id: str, per_session: int) -> list[LifecycleEvent]:
    out: list[LifecycleEvent] = []
    while len(out) < count:
        s = session_id()
        out.append(initiated(app_id, s))
        out.extend(answered(app_id, s) for _ in range(per_session - 2))
        out.append(hangup(app_id, s, q850_code=16))
    return out[:count]


def _quantile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def emit_latency(directory: Path, count: int, durable_sync: bool, burst: int) -> None:
    """``burst`` events back to back, then 10 ms for the loop (and the checkpoint thread)."""
    path = directory / f"emit-{durable_sync}-{burst}.db"
    cfg = hook_config(app("bench", "http://127.0.0.1:9/none"), outbox_path=str(path))
    service = WebhookService(cfg, durable_sync=durable_sync)
    events = _events(count, "bench", 4)
    samples = []
    for i, event in enumerate(events):
        if i % burst == 0:
            await asyncio.sleep(0.01)
        start = time.perf_counter()
        service.emit(event)
        samples.append(time.perf_counter() - start)
    service.close()
    samples.sort()
    print(
        f"emit {'FULL  ' if durable_sync else 'NORMAL'} x{count} in bursts of {burst}: "
        f"p50 {_quantile(samples, 0.5) * 1e6:.0f} us, p99 {_quantile(samples, 0.99) * 1e6:.0f} us, "
        f"p99.9 {_quantile(samples, 0.999) * 1e6:.0f} us, max {samples[-1] * 1e6:.0f} us, "
        f"mean {statistics.fmean(samples) * 1e6:.0f} us"
    )


async def throughput(directory: Path, count: int, concurrency: int, per_session: int) -> None:
    receiver = Receiver()
    await receiver.start()
    path = directory / f"tp-{concurrency}-{per_session}.db"
    cfg = hook_config(app("bench", receiver.url), outbox_path=str(path), concurrency=concurrency)
    service = WebhookService(cfg)
    task = asyncio.create_task(service.run())
    start = time.perf_counter()
    for event in _events(count, "bench", per_session):
        service.emit(event)
    await receiver.wait_for_count(count, within=300)
    elapsed = time.perf_counter() - start
    await service.shutdown()
    await task
    service.close()
    await receiver.stop()
    print(
        f"deliver x{count}, concurrency {concurrency}, {per_session} events/session: "
        f"{elapsed:.2f} s, {count / elapsed:.0f} webhooks/s (receiver in the same process)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10000)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(tmp)
        for burst in (args.events, 100):
            await emit_latency(directory, args.events, durable_sync=False, burst=burst)
            await emit_latency(directory, args.events, durable_sync=True, burst=burst)
        for concurrency in (4, 16):
            await throughput(directory, args.events, concurrency, per_session=4)
        await throughput(directory, args.events, 16, per_session=1)


if __name__ == "__main__":
    asyncio.run(main())
