"""Gateway CPU per delivered webhook from a backlog, A/B against other source trees.

    .venv/bin/python -m benchmarks.webhook_backlog [--events 10000] [--rounds 3] [--concurrency 4]
        [--tree label=/path/to/server ...] [--profile DIR]
    .venv/bin/python -m benchmarks.webhook_backlog --micro [--events 10000] [--rounds 3]

Each round runs, for every tree in turn (interleaved, so load elsewhere on the
machine hits all alike), a worker process that imports ``callcontrol`` from
that tree: it emits ``--events`` events (5 per session) into a file outbox
without delivering (the emit cost, CPU per event), then starts the webhook
service and measures its own CPU (utime + stime of every thread, from /proc)
until the queue is empty, while a receiver in a process of its own answers
204 on keep-alive connections. With ``--profile`` the delivery of the first
round is recorded by py-spy (``--gil``, raw format) for each tree. ``--micro``
compares the HTTP clients alone: CPU per POST of aiohttp as the gateway used
it and of the lean client, 4 in flight, interleaved, in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import uvloop

ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # noqa: S105 - a test secret


# -- the receiver: answers every POST with 204, as cheaply as Python can -------


class _Receiver(asyncio.Protocol):
    count = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._buffer = b""

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data
        answers = 0
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buffer[:end].lower()
            at = head.find(b"content-length:")
            length = (
                int(head[at + 15 : head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0 else None])
                if at >= 0
                else 0
            )
            if len(buffer) < end + 4 + length:
                break
            buffer = buffer[end + 4 + length :]
            answers += 1
        self._buffer = buffer
        if answers:
            _Receiver.count += answers
            self._transport.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n" * answers)


async def _receive() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Receiver, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the driver closes our stdin
    server.close()


# -- the worker: one tree's gateway side ----------------------------------------


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


async def _work(args: argparse.Namespace) -> dict[str, Any]:
    from callcontrol.config import Application, GatewayConfig, WebhookConfig, hash_api_key
    from callcontrol.events import CallAnswered, CallHangup, CallInitiated
    from callcontrol.webhooks import WebhookService

    config = GatewayConfig(
        webhooks=WebhookConfig(
            outbox_path=str(Path(args.dir) / "outbox.db"),
            per_destination_concurrency=args.concurrency,
        ),
        applications=(Application("bench", hash_api_key("k"), args.url, (SECRET,)),),
    )
    service = WebhookService(config)
    events: list[Any] = []
    while len(events) < args.events:
        session = os.urandom(16).hex()
        events.append(
            CallInitiated(
                app_id="bench",
                session_id=session,
                caller_number="+15551230001",
                destination_number="+15559870002",
                direction="inbound",
            )
        )
        events.extend(CallAnswered(app_id="bench", session_id=session) for _ in range(3))
        events.append(CallHangup(app_id="bench", session_id=session, cause="NORMAL_CLEARING"))
    events = events[: args.events]
    cpu0 = _cpu()
    for event in events:
        service.emit(event)
    emit_cpu = _cpu() - cpu0
    depth = service._metrics.queue_depth  # a benchmark reads the gauge directly
    await asyncio.sleep(0.5)  # the checkpoint thread catches up outside the measurement
    print(f"READY {os.getpid()}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    cpu0, t0 = _cpu(), time.perf_counter()
    task = asyncio.create_task(service.run())
    while depth._value.get() > 0:  # noqa: ASYNC110 - polling a gauge costs the measured process ~nothing
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - t0
    deliver_cpu = _cpu() - cpu0
    await service.shutdown()
    await task
    service.close()
    return {
        "emit_cpu_ms": emit_cpu * 1000 / args.events,
        "deliver_cpu_ms": deliver_cpu * 1000 / args.events,
        "events_per_s": args.events / elapsed,
    }


# -- clients alone: CPU per POST of aiohttp (as the gateway used it) vs the lean client --


async def _micro(url: str, posts: int, rounds: int) -> dict[str, list[float]]:
    import aiohttp

    from callcontrol.webhooks.http_client import WebhookClient

    body = b'{"type":"call.answered","data":{"session_id":"' + b"x" * 120 + b'"}}'
    headers = {"webhook-id": "evt", "webhook-timestamp": "1700000000", "webhook-signature": "v1," + "a" * 44}
    in_flight = 4

    async def with_aiohttp() -> None:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
        )
        timeout = aiohttp.ClientTimeout(total=5.0)
        extra = {"content-type": "application/json", "user-agent": "x", "accept-encoding": "identity"}

        async def one() -> None:
            for _ in range(posts // in_flight):
                async with session.post(
                    url, data=body, headers={**headers, **extra}, timeout=timeout, allow_redirects=False
                ) as response:
                    await response.content.read(65536)

        await asyncio.gather(*(one() for _ in range(in_flight)))
        await session.close()

    async def with_lean() -> None:
        client = WebhookClient()
        destination = client.destination(url)

        async def one() -> None:
            for _ in range(posts // in_flight):
                await destination.post(body, headers, 5.0)

        await asyncio.gather(*(one() for _ in range(in_flight)))
        await client.close()

    results: dict[str, list[float]] = {"aiohttp": [], "lean": []}
    for _ in range(rounds):
        for name, run in (("aiohttp", with_aiohttp), ("lean", with_lean)):
            cpu0 = _cpu()
            await run()
            results[name].append((_cpu() - cpu0) * 1000 / posts)
    return results


# -- the driver ------------------------------------------------------------------


def _run_tree(
    server_dir: str, url: str, events: int, concurrency: int, profile: Path | None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="wh-backlog-") as tmp:
        env = {**os.environ, "PYTHONPATH": f"{server_dir}:{ROOT}"}
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.webhook_backlog",
            "--worker",
            "--url",
            url,
            "--dir",
            tmp,
            "--events",
            str(events),
            "--concurrency",
            str(concurrency),
        ]
        worker = subprocess.Popen(
            cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        assert worker.stdout is not None
        assert worker.stdin is not None
        line = worker.stdout.readline()
        if not line.startswith("READY"):
            worker.wait()
            raise RuntimeError(f"worker for {server_dir} failed: {line!r}")
        spy = None
        if profile is not None:
            spy = subprocess.Popen(
                [
                    str(ROOT / ".venv/bin/py-spy"),
                    "record",
                    "--pid",
                    line.split()[1],
                    "--gil",
                    "--threads",
                    "--nonblocking",
                    "--format",
                    "raw",
                    "--rate",
                    "250",
                    "-o",
                    str(profile),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
        worker.stdin.write("go\n")
        worker.stdin.flush()
        result: dict[str, Any] = json.loads(worker.stdout.readline())
        worker.stdin.close()
        worker.wait()
        if spy is not None:
            spy.wait(timeout=30)
        return result


@contextlib.contextmanager
def _receiver() -> Iterator[str]:
    """The receiver in a process of its own, for the block; yields its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.webhook_backlog", "--receiver"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    assert proc.stdin is not None
    try:
        yield f"http://127.0.0.1:{proc.stdout.readline().strip()}/hooks"
    finally:
        proc.stdin.close()  # its end of input tells it to stop
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--tree", action="append", default=[], help="label=path to a server/ directory")
    parser.add_argument("--profile", help="a directory for py-spy's raw output (first round)")
    parser.add_argument("--micro", action="store_true", help="the HTTP clients alone, 4 in flight")
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--receiver", action="store_true")
    parser.add_argument("--url")
    parser.add_argument("--dir")
    args = parser.parse_args()
    if args.receiver:
        uvloop.run(_receive())
        return
    if args.worker:
        print(json.dumps(uvloop.run(_work(args))), flush=True)
        return
    trees = dict(t.split("=", 1) for t in args.tree) or {"this": str(ROOT / "server")}
    if args.micro:
        with _receiver() as url:
            micro = uvloop.run(_micro(url, args.events, args.rounds))
        for name, values in micro.items():
            print(
                f"{name}: CPU ms per POST, median of {args.rounds}: {statistics.median(values):.3f}"
                f" ({', '.join(f'{v:.3f}' for v in values)})"
            )
        return
    results: dict[str, list[dict[str, Any]]] = {label: [] for label in trees}
    with _receiver() as url:
        for round_ in range(args.rounds):
            for label, server_dir in trees.items():
                profile = Path(args.profile) / f"{label}.txt" if args.profile and round_ == 0 else None
                if profile is not None:
                    profile.parent.mkdir(parents=True, exist_ok=True)
                result = _run_tree(server_dir, url, args.events, args.concurrency, profile)
                results[label].append(result)
                print(
                    f"round {round_} {label}: " + ", ".join(f"{k} {v:.3f}" for k, v in result.items()),
                    flush=True,
                )
    print(
        f"load average {os.getloadavg()[0]:.1f}; median of {args.rounds} rounds, {args.events} events, "
        f"{args.concurrency} in flight:"
    )
    print("| tree | emit CPU ms/event | delivery CPU ms/event | events/s |")
    print("|---|---|---|---|")
    for label, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"| {label} | {med['emit_cpu_ms']:.3f} | {med['deliver_cpu_ms']:.3f} "
            f"| {med['events_per_s']:,.0f} |"
        )


if __name__ == "__main__":
    main()
