"""A gateway stand-in for the crash test: a WebhookService on an outbox file, in its own process.

    python -m tests.webhooks.crash_worker --outbox PATH --url URL [--emit --sessions S --per-session N]

With ``--emit`` it first emits S x N events (ids from ``event_ids``, sessions
interleaved), then prints ``emitted``; either way it delivers until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable

from callcontrol.events import LifecycleEvent
from callcontrol.webhooks import WebhookService

from .conftest import FAST_RETRY, SECRET_A, answered, app, hangup, hook_config, initiated

APP_ID = "crash-app"


def session_of(index: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"crash-session-{index}"))


def event_ids(sessions: int, per_session: int) -> list[list[str]]:
    """Per session, its event ids in emit order."""
    return [[f"evt-{s:04d}-{n:02d}" for n in range(per_session)] for s in range(sessions)]


def _event(session: int, n: int, per_session: int, event_id: str) -> LifecycleEvent:
    sid = session_of(session)
    if n == 0:
        return initiated(APP_ID, sid, event_id=event_id)
    if n == per_session - 1:
        return hangup(APP_ID, sid, event_id=event_id, q850_code=16)
    return answered(APP_ID, sid, event_id=event_id)


def add_emit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--emit", action="store_true")
    parser.add_argument("--sessions", type=int, default=40)
    parser.add_argument("--per-session", type=int, default=5)


async def serve(
    service: WebhookService, args: argparse.Namespace, ready: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Deliver until SIGTERM; once ``ready`` (if any) returns, emit the events ``--emit`` asks for."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    runner = asyncio.create_task(service.run())
    if ready is not None:
        await ready()
    if args.emit:
        ids = event_ids(args.sessions, args.per_session)
        for n in range(args.per_session):
            for s in range(args.sessions):
                service.emit(_event(s, n, args.per_session, ids[s][n]))
        await service.flush()
        print("emitted", flush=True)
    await stop.wait()
    await service.shutdown(grace=1.0)
    await runner
    service.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--outbox", required=True)
    parser.add_argument("--url", required=True)
    add_emit_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)

    config = hook_config(
        app(APP_ID, args.url, SECRET_A), outbox_path=args.outbox, request_timeout_s=30, concurrency=4
    )
    await serve(WebhookService(config, retry=FAST_RETRY), args)


if __name__ == "__main__":
    asyncio.run(main())
