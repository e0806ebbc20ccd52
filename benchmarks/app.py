"""The application side (its own process): a webhook receiver that can also drive calls.

It records every webhook's arrival (lag = arrival - ``occurred_at``; both clocks
are this machine's) and, when ``react`` is on, behaves like a real call-control
application: ``call.initiated`` → Answer, ``call.answered`` → Hangup, over
gRPC (round-robin over the replicas' addresses in a cluster, as a load balancer
would: any replica answers any request). A call is complete once all five of its webhooks arrived
(``call.initiated``, ``call.answered``, ``call.hangup`` and two
``command.result``). ``hold`` keeps every request waiting until ``release``,
so the gateway builds a backlog. Signatures are not verified here: this is the
measuring side, and its CPU is reported on its own line.
``python -m benchmarks.app``
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

import grpc
from aiohttp import web

from benchmarks import worker
from callcontrol.v1 import commands_pb2, commands_pb2_grpc

Json = worker.Json
EVENTS_PER_CALL = 5


class Receiver:
    def __init__(self) -> None:
        self.seen_ids: set[str] = set()
        self.initiated: set[str] = set()
        self.duplicates = 0
        self.released = asyncio.Event()
        self.released.set()
        self.released_at = 0.0
        self._tick = asyncio.Event()
        self.stubs: list[commands_pb2_grpc.SessionCommandsAsyncStub] = []
        self.channels: list[grpc.aio.Channel] = []
        self._next = 0
        self.metadata: tuple[tuple[str, str], ...] = ()
        self._tasks: set[asyncio.Task[None]] = set()
        self.reset()

    def reset(self) -> None:
        self.lags: list[float] = []
        self.counts: dict[str, int] = {}
        self.per_call: dict[str, int] = {}
        self.started_at: dict[str, float] = {}
        self.call_times: list[float] = []
        self.complete = 0
        self.rpc_errors: dict[str, int] = {}
        self.commands_sent = 0
        self.first_arrival: float | None = None
        self.last_arrival: float | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        arrived = time.time()
        if not self.released.is_set():
            await self.released.wait()
            arrived = time.time()
        event = json.loads(body)
        if event["id"] in self.seen_ids:
            self.duplicates += 1
            return web.Response(status=200)
        self.seen_ids.add(event["id"])
        occurred = datetime.fromisoformat(event["occurred_at"]).timestamp()
        self.lags.append(max(0.0, arrived - occurred))
        kind, session_id = event["type"], event["session_id"]
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.first_arrival = self.first_arrival or arrived
        self.last_arrival = arrived
        if kind == "call.initiated":
            self.initiated.add(session_id)
            self.started_at[session_id] = occurred
        count = self.per_call.get(session_id, 0) + 1
        self.per_call[session_id] = count
        if count == EVENTS_PER_CALL:
            self.complete += 1
            if session_id in self.started_at:
                self.call_times.append(arrived - self.started_at[session_id])
        if self.stubs:
            if kind == "call.initiated":
                self._spawn(self._command("answer", session_id))
            elif kind == "call.answered":
                self._spawn(self._command("hangup", session_id))
        self._tick.set()
        self._tick = asyncio.Event()
        return web.Response(status=200)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _command(self, verb: str, session_id: str) -> None:
        stub = self.stubs[self._next % len(self.stubs)]
        self._next += 1
        self.commands_sent += 1
        try:
            if verb == "answer":
                await stub.Answer(commands_pb2.AnswerRequest(session_id=session_id), metadata=self.metadata)
            else:
                await stub.Hangup(commands_pb2.HangupRequest(session_id=session_id), metadata=self.metadata)
        except grpc.aio.AioRpcError as exc:
            key = f"{verb} {exc.code().name}"
            self.rpc_errors[key] = self.rpc_errors.get(key, 0) + 1

    async def until(self, done: Callable[[], bool], timeout: float) -> bool:  # noqa: ASYNC109
        """Until ``done()`` is true (checked on every webhook), or the timeout."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            tick = self._tick
            try:
                await asyncio.wait_for(tick.wait(), min(left, 0.5))
            except TimeoutError:
                continue
        return True


_receiver: Receiver | None = None


def _rx() -> Receiver:
    assert _receiver is not None
    return _receiver


async def reset(args: Json) -> Json:
    _rx().reset()
    return {}


async def stats(args: Json) -> Json:
    rx = _rx()
    span = (rx.last_arrival - rx.first_arrival) if rx.first_arrival and rx.last_arrival else 0.0
    return {
        "counts": rx.counts,
        "webhooks": len(rx.lags),
        "lag": worker.percentiles(rx.lags),
        "call_time": worker.percentiles(rx.call_times),
        "complete_calls": rx.complete,
        "rpc_errors": rx.rpc_errors,
        "commands_sent": rx.commands_sent,
        "duplicates": rx.duplicates,
        "first_arrival": rx.first_arrival,
        "last_arrival": rx.last_arrival,
        "released_at": rx.released_at,
        "span_s": round(span, 4),
    }


async def wait_sessions(args: Json) -> Json:
    rx = _rx()
    wanted = set(args["session_ids"])
    ok = await rx.until(lambda: wanted <= rx.initiated, float(args["wait_s"]))
    return {"ok_all": ok, "missing": len(wanted - rx.initiated)}


async def wait_webhooks(args: Json) -> Json:
    """Until at least ``n`` webhooks (of ``type``, if given) arrived since the last reset."""
    rx = _rx()
    kind, n = args.get("type"), int(args["n"])

    def enough() -> bool:
        return (rx.counts.get(kind, 0) if kind else len(rx.lags)) >= n

    return {"ok_all": await rx.until(enough, float(args["wait_s"]))}


async def wait_complete(args: Json) -> Json:
    rx = _rx()
    n = int(args["n"])
    return {"ok_all": await rx.until(lambda: rx.complete >= n, float(args["wait_s"]))}


async def hold(args: Json) -> Json:
    _rx().released.clear()
    return {}


async def release(args: Json) -> Json:
    rx = _rx()
    rx.released_at = time.time()
    rx.released.set()
    return {"released_at": rx.released_at}


async def react(args: Json) -> Json:
    """Drive calls (answer on call.initiated, hang up on call.answered) or stop doing so.

    ``addresses``: the gateway's gRPC address, or every replica's (used in turn).
    """
    rx = _rx()
    for channel in rx.channels:
        await channel.close()
    rx.channels, rx.stubs = [], []
    if args.get("addresses"):
        rx.channels = [grpc.aio.insecure_channel(str(a)) for a in args["addresses"]]
        rx.stubs = [commands_pb2_grpc.SessionCommandsStub(c) for c in rx.channels]
        rx.metadata = (("x-app-id", str(args["app_id"])), ("x-api-key", str(args["api_key"])))
    return {}


async def start() -> Json:
    global _receiver
    _receiver = Receiver()
    application = web.Application(client_max_size=1024 * 1024)
    application.router.add_post("/hooks", _receiver.handle)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    port = runner.addresses[0][1]
    return {"url": f"http://127.0.0.1:{port}/hooks"}


if __name__ == "__main__":
    worker.main(
        {
            "reset": reset,
            "stats": stats,
            "wait_sessions": wait_sessions,
            "wait_webhooks": wait_webhooks,
            "wait_complete": wait_complete,
            "hold": hold,
            "release": release,
            "react": react,
        },
        start,
    )
