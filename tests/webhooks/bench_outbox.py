"""Measure emit latency and delivery throughput (not a test; prints numbers).

PYTHONPATH=server .venv/bin/python -m tests.webhooks.bench_outbox [--events 10000] [--dir /tmp] \\
    [--redis [--deliveries-only]]

``--redis`` measures the cluster outbox instead, on a local redis-server
(AOF with ``appendfsync always``, then ``everysec``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import inspect
import statistics
import tempfile
import time
import types
from pathlib import Path
from typing import Any

from callcontrol.config import ClusterConfig, GatewayConfig
from callcontrol.events import LifecycleEvent
from callcontrol.webhooks import WebhookService
from tests.redis_server import RedisServer
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


async def _emits(service: WebhookService, count: int, burst: int, label: str) -> None:
    """``burst`` events back to back, then 10 ms for the loop (and the checkpoint thread)."""
    samples = []
    events = _events(count, "bench", 4)
    cpu, loop_cpu, wall = time.process_time(), time.thread_time(), time.perf_counter()
    for i, event in enumerate(events):
        if i % burst == 0:
            await asyncio.sleep(0.01)
        start = time.perf_counter()
        service.emit(event)
        samples.append(time.perf_counter() - start)
    await service.flush()  # a cluster's events are stored off the loop: until the last is acknowledged
    wall = time.perf_counter() - wall
    cpu, loop_cpu = time.process_time() - cpu, time.thread_time() - loop_cpu
    service.close()
    samples.sort()
    print(
        f"emit {label} x{count} in bursts of {burst}: "
        f"p50 {_quantile(samples, 0.5) * 1e6:.0f} us, p99 {_quantile(samples, 0.99) * 1e6:.0f} us, "
        f"p99.9 {_quantile(samples, 0.999) * 1e6:.0f} us, max {samples[-1] * 1e6:.0f} us, "
        f"mean {statistics.fmean(samples) * 1e6:.0f} us; per event: CPU {cpu / count * 1e6:.0f} us "
        f"(loop thread {loop_cpu / count * 1e6:.0f} us); {count / wall:.0f} events/s until the last stored"
    )


async def _deliveries(
    service: WebhookService, receiver: Receiver, count: int, per_session: int, label: str
) -> None:
    spent, calls = _time_outbox_calls(service)
    task = asyncio.create_task(service.run())
    cpu, loop_cpu, start = time.process_time(), time.thread_time(), time.perf_counter()
    for event in _events(count, "bench", per_session):
        service.emit(event)
    await receiver.wait_for_count(count, within=300)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    loop_cpu = time.thread_time() - loop_cpu
    await service.shutdown()
    await task
    service.close()
    await receiver.stop()
    print(
        f"deliver {label}x{count}, {per_session} events/session: "
        f"{elapsed:.2f} s, {count / elapsed:.0f} webhooks/s (receiver in the same process), "
        f"CPU {cpu / count * 1e6:.0f} us/webhook (loop thread {loop_cpu / count * 1e6:.0f} us); "
        "the loop was held in the outbox by "
        + ", ".join(
            f"{name} {t / count * 1e6:.0f} us/webhook ({n} calls, {t / n * 1e6:.1f} us each)"
            for name, t in spent.items()
            if (n := calls[name])
        )
    )


def _time_outbox_calls(service: WebhookService) -> tuple[dict[str, float], dict[str, int]]:
    """Time the loop spends inside the outbox's calls, by call: all of a synchronous call,
    only the steps of a coroutine (``claim``), not its waits."""
    outbox = service._outbox
    spent: dict[str, float] = {}
    calls: dict[str, int] = {}

    def timing(name: str) -> Any:
        call = getattr(outbox, name)
        spent[name] = 0.0
        calls[name] = 0

        def timed(*args: object, **kw: object) -> Any:
            calls[name] += 1
            started = time.perf_counter()
            try:
                return call(*args, **kw)
            finally:
                spent[name] += time.perf_counter() - started

        @types.coroutine
        def stepped(*args: object, **kw: object) -> Any:
            calls[name] += 1
            steps = call(*args, **kw).__await__()
            send: Any = None
            while True:
                started = time.perf_counter()
                try:
                    waiting = steps.send(send)
                except StopIteration as stop:
                    return stop.value
                finally:
                    spent[name] += time.perf_counter() - started
                send = yield waiting

        return stepped if inspect.iscoroutinefunction(call) else timed

    for name in ("record_attempt", "due", "next_due", "claim"):
        if hasattr(outbox, name):
            setattr(outbox, name, timing(name))
    return spent, calls


async def emit_latency(directory: Path, count: int, durable_sync: bool, burst: int) -> None:
    path = directory / f"emit-{durable_sync}-{burst}.db"
    cfg = hook_config(app("bench", "http://127.0.0.1:9/none"), outbox_path=str(path))
    service = WebhookService(cfg, durable_sync=durable_sync)
    await _emits(service, count, burst, "FULL  " if durable_sync else "NORMAL")


async def throughput(directory: Path, count: int, concurrency: int, per_session: int) -> None:
    receiver = Receiver()
    await receiver.start()
    path = directory / f"tp-{concurrency}-{per_session}.db"
    cfg = hook_config(app("bench", receiver.url), outbox_path=str(path), concurrency=concurrency)
    await _deliveries(WebhookService(cfg), receiver, count, per_session, f"concurrency {concurrency} ")


def _on_redis(cfg: GatewayConfig, url: str) -> GatewayConfig:
    return dataclasses.replace(cfg, cluster=ClusterConfig(redis_url=url, replica_id="bench"))


async def redis_emit_latency(server: RedisServer, count: int, burst: int, fsync: str) -> None:
    """As ``emit_latency``, each event acknowledged by Redis (a fresh keyspace per run)."""
    server_cfg = _on_redis(hook_config(app("bench", "http://127.0.0.1:9/none")), server.url)
    service = WebhookService(server_cfg, redis_prefix=f"bench-{fsync}-{burst}:")
    service._outbox._redis.config_set("appendfsync", fsync)  # type: ignore[attr-defined]
    await _emits(service, count, burst, f"Redis appendfsync {fsync:8}")


async def redis_throughput(server: RedisServer, count: int, concurrency: int, per_session: int) -> None:
    receiver = Receiver()
    await receiver.start()
    cfg = _on_redis(hook_config(app("bench", receiver.url), concurrency=concurrency), server.url)
    service = WebhookService(cfg, redis_prefix=f"tp-{concurrency}-{per_session}:")
    await _deliveries(service, receiver, count, per_session, f"via Redis, concurrency {concurrency} ")


async def redis_main(directory: Path, count: int, deliveries_only: bool) -> None:
    server = RedisServer(directory / "redis")
    server.start()
    try:
        for fsync in () if deliveries_only else ("always", "everysec"):
            for burst in (count, 100):
                await redis_emit_latency(server, count, burst, fsync)
        await redis_throughput(server, count, 16, per_session=4)
    finally:
        server.stop()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10000)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--redis", action="store_true")
    parser.add_argument("--deliveries-only", action="store_true", help="with --redis: no emit latency")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(tmp)
        if args.redis:
            await redis_main(directory, args.events, args.deliveries_only)
            return
        for burst in (args.events, 100):
            await emit_latency(directory, args.events, durable_sync=False, burst=burst)
            await emit_latency(directory, args.events, durable_sync=True, burst=burst)
        for concurrency in (4, 16):
            await throughput(directory, args.events, concurrency, per_session=4)
        await throughput(directory, args.events, 16, per_session=1)


if __name__ == "__main__":
    asyncio.run(main())
