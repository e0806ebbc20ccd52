"""The control channel of every bench child process: JSON lines on stdin/stdout.

The orchestrator (``benchmarks.run``) writes one request per line,
``{"op": NAME, ...arguments}``, and reads one reply per line, ``{"ok": true,
...result}`` or ``{"ok": false, "error": ...}``. Requests are handled one
after another. stdout belongs to this channel; logs go to stderr.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

Json = dict[str, Any]
Handler = Callable[[Json], Awaitable[Json]]

log = logging.getLogger("benchmarks")


def raise_fd_limit() -> int:
    """Soft open-files limit up to the hard one: thousands of call sockets per process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _write(message: Json) -> None:
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def serve(handlers: Mapping[str, Handler], hello: Json) -> None:
    """Announce ``hello`` (the child is ready), then answer requests until ``quit`` or EOF."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    _write({"ok": True, **hello})
    while line := await reader.readline():
        request: Json = json.loads(line)
        op = request.pop("op")
        if op == "quit":
            _write({"ok": True})
            return
        try:
            result = await handlers[op](request)
        except Exception as exc:  # the orchestrator reports it; the child stays usable
            log.exception("op %s failed", op)
            _write({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        else:
            _write({"ok": True, **result})


def main(handlers: Mapping[str, Handler], start: Callable[[], Awaitable[Json]] | None = None) -> None:
    """Run a child: ``start`` sets it up and returns what it announces (its address...)."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    raise_fd_limit()

    async def run() -> None:
        hello = await start() if start is not None else {}
        await serve(handlers, hello)

    asyncio.run(run())


def percentiles(values: list[float], scale: float = 1000.0) -> Json:
    """p50/p99/max of ``values`` (seconds) in milliseconds; empty → None."""
    if not values:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None, "n": 0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * scale, 3)

    return {"p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": round(ordered[-1] * scale, 3), "n": len(values)}
