"""CPU per event of the Redis outbox's writer thread against redis.asyncio doing the same batches.

PYTHONPATH=server .venv/bin/python -m tests.webhooks.bench_redis_writer (not a test; prints numbers)

Why ``redis_outbox`` stores events from a thread: both send the same pipelines of EVALSHA, 256 a
round trip; redis.asyncio packs and parses them on the event loop.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import redis.asyncio as aredis

from callcontrol.webhooks.outbox import NewDelivery
from callcontrol.webhooks.redis_outbox import _ADD, RedisOutbox, _add_args
from tests.redis_server import RedisServer

N = 5000


def _events(tag: str) -> list[NewDelivery]:
    body = b'{"x": 1}' * 40
    return [
        NewDelivery(f"{tag}-{i}", "call.answered", "bench", f"s{i % 1000}", body, 100.0 + i) for i in range(N)
    ]


def _report(how: str, fsync: str, cpu: float, wall: float, loop_cpu: float | None) -> None:
    on_loop = "all on the loop" if loop_cpu is None else f"loop thread {loop_cpu / N * 1e6:.0f} us"
    print(f"{how:14} fsync {fsync:8}: CPU {cpu / N * 1e6:.0f} us/event ({on_loop}), {N / wall:.0f} events/s")


async def via_asyncio(url: str, fsync: str) -> None:
    r = aredis.Redis.from_url(url, socket_timeout=1.0)
    await r.config_set("appendfsync", fsync)
    sha = await r.script_load(_ADD)
    queue = _events(f"a-{fsync}")
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, N, 256):
        pipe = r.pipeline(transaction=False)
        for event in queue[start : start + 256]:
            pipe.evalsha(sha, 0, *_add_args("cmp-a:", event))
        await pipe.execute(raise_on_error=False)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await r.aclose()
    _report("redis.asyncio", fsync, cpu, wall, None)


async def via_thread(url: str, fsync: str) -> None:
    outbox = RedisOutbox(url, prefix="cmp-t:")
    outbox._redis.config_set("appendfsync", fsync)
    events = _events(f"t-{fsync}")
    cpu, loop_cpu, wall = time.process_time(), time.thread_time(), time.perf_counter()
    for event in events:
        outbox.add_soon(event, lambda result: None)
    await outbox.flush()
    cpu, loop_cpu, wall = time.process_time() - cpu, time.thread_time() - loop_cpu, time.perf_counter() - wall
    outbox.close()
    _report("writer thread", fsync, cpu, wall, loop_cpu)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        try:
            for fsync in ("always", "everysec"):
                for _ in range(2):
                    await via_asyncio(server.url, fsync)
                    await via_thread(server.url, fsync)
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
