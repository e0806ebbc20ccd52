"""Load generator (its own process): closed-loop requests with N in flight.

``echo``: the bare grpc.aio echo. ``grpc_commands`` / ``rest_commands``: an
answer then a hangup on each call of a pool of live calls, over gRPC directly
or over REST through Envoy. Each worker takes the next call, so ``in_flight``
calls are being commanded at any moment. A run ends after ``duration`` seconds
or when the pool (or ``max_calls``) is used up; unused calls are handed back.
``python -m benchmarks.loadgen``
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable

import aiohttp
import grpc

from benchmarks import worker
from benchmarks.echo_server import METHOD
from callcontrol.v1 import commands_pb2, commands_pb2_grpc

Json = worker.Json


class _Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    async def timed(self, request: Callable[[], Awaitable[None]]) -> None:
        t0 = time.perf_counter()
        try:
            await request()
        except grpc.aio.AioRpcError as exc:
            self.error(exc.code().name)
            return
        except RestError as exc:
            self.error(f"HTTP {exc.status}")
            return
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.error(type(exc).__name__)
            return
        self.latencies.append(time.perf_counter() - t0)

    def result(self, requests: int, seconds: float, raw: bool) -> Json:
        out: Json = {
            "requests": requests,
            "seconds": round(seconds, 4),
            "per_s": round(requests / seconds, 1) if seconds > 0 else 0.0,
            "latency": worker.percentiles(self.latencies),
            "errors": self.errors,
        }
        if raw:  # for the orchestrator to merge slices of one measurement
            out["latencies_ms"] = [round(s * 1000, 3) for s in self.latencies]
        return out


class RestError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


async def echo(args: Json) -> Json:
    in_flight, duration = int(args["in_flight"]), float(args["duration"])
    payload = commands_pb2.AnswerRequest(
        session_id="6f1c1c32-8a3e-4d0e-9a57-1b2c3d4e5f60"
    ).SerializeToString()
    tally = _Tally()
    async with grpc.aio.insecure_channel(args["address"]) as channel:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(METHOD)
        for _ in range(int(args.get("warmup", 50))):
            await call(payload)
        count = 0
        t0 = time.perf_counter()
        deadline = t0 + duration

        async def one() -> None:
            await call(payload)

        async def loop() -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                await tally.timed(one)
                count += 1

        await asyncio.gather(*(loop() for _ in range(in_flight)))
        return tally.result(count, time.perf_counter() - t0, bool(args.get("raw")))


Commander = Callable[[str, str], Awaitable[None]]  # (session_id, "answer" | "hangup")


async def _drive(args: Json, command: Commander) -> Json:
    """Answer then hang up each call of the pool with ``in_flight`` workers."""
    pool: list[str] = list(args["session_ids"])
    pool.reverse()  # pop() from the end takes them in the given order
    in_flight, duration = int(args["in_flight"]), float(args["duration"])
    max_calls = int(args.get("max_calls", len(pool)))
    tally = _Tally()
    commands = 0
    calls = 0
    t0 = time.perf_counter()
    deadline = t0 + duration

    async def loop() -> None:
        nonlocal commands, calls
        while pool and calls < max_calls and time.perf_counter() < deadline:
            session_id = pool.pop()
            calls += 1
            for verb in ("answer", "hangup"):
                await tally.timed(functools.partial(command, session_id, verb))
                commands += 1

    await asyncio.gather(*(loop() for _ in range(in_flight)))
    out = tally.result(commands, time.perf_counter() - t0, bool(args.get("raw")))
    out["calls"] = calls
    out["pool_exhausted"] = not pool
    pool.reverse()
    out["unused"] = pool
    return out


async def grpc_commands(args: Json) -> Json:
    metadata = (("x-app-id", args["app_id"]), ("x-api-key", args["api_key"]))
    async with grpc.aio.insecure_channel(args["address"]) as channel:
        stub = commands_pb2_grpc.SessionCommandsStub(channel)

        async def command(session_id: str, verb: str) -> None:
            if verb == "answer":
                await stub.Answer(commands_pb2.AnswerRequest(session_id=session_id), metadata=metadata)
            else:
                await stub.Hangup(commands_pb2.HangupRequest(session_id=session_id), metadata=metadata)

        return await _drive(args, command)


async def rest_commands(args: Json) -> Json:
    base = args["url"].rstrip("/")
    headers = {"X-App-ID": args["app_id"], "X-API-Key": args["api_key"], "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=int(args["in_flight"]))
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def command(session_id: str, verb: str) -> None:
            url = f"{base}/api/v1/sessions/{session_id}/commands/{verb}"
            async with http.post(url, data=b"{}", headers=headers) as response:
                await response.read()
                if response.status != 202:
                    raise RestError(response.status)

        return await _drive(args, command)


if __name__ == "__main__":
    worker.main({"echo": echo, "grpc_commands": grpc_commands, "rest_commands": rest_commands})
