"""Soak: thousands of simulated calls through the real stack, with hostile peers and a bad receiver.

Everything on loopback, in separate processes: the gateway with its Envoy
(``python -m callcontrol``, a real outbox file), the webhook receivers
(``benchmarks/soak_receiver.py``: healthy applications and one that answers 503
or stalls until the drain), and this driver, which plays FreeSWITCH (the
simulator) and the applications (REST through Envoy). Calls answer, hang up,
disconnect, get hung up by the caller or lose their socket; among them hostile
ESL peers send garbage, stop in the middle of a frame, or reuse a live call's
Unique-ID. Bounded by ``--calls`` and ``--seconds`` (then a bounded drain).

Reports: webhooks lost (expected but never received; must be 0), REST 5xx (must
be 0), calls an intruder harmed (must be 0), gateway and Envoy memory along the
run, webhook latency of the healthy applications while the flaky one
misbehaves, and what the gateway did with each hostile peer. Exit status 1 when
anything that must be 0 is not.

    scripts/soak [--calls 2000] [--seconds 120] [--drain-seconds 90] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from callcontrol import die_with_parent
from callcontrol.config import DEMO_WEBHOOK_SECRET, Address
from callcontrol.simulator import FreeSwitchSimulator
from callcontrol.simulator.call import SimulatedCall

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HEALTHY = ("soak-app-1", "soak-app-2", "soak-app-3")
FLAKY = "soak-flaky"
APPS = (*HEALTHY, FLAKY)
API_KEY = "soak-key-0123456789"
SCENARIOS = (
    ("answer_hangup", 50),
    ("answer_caller_hangup", 15),
    ("disconnect", 10),
    ("quiet_caller_hangup", 15),
    ("answer_socket_drop", 10),
)
ENDS_WITH_HANGUP = {
    "answer_hangup",
    "answer_caller_hangup",
    "quiet_caller_hangup",
    "answer_socket_drop",
    "intruded",
}
HOSTILE_KINDS = ("garbage", "half_frame")
# Small, so that the soak runs long past the bound and memory shows whether it holds.
RETENTION_PER_APP = 500
_ESL = re.compile(rb"outbound Event Socket listening on (\S+):(\d+)")
_REST = re.compile(rb"envoy serving REST on (http://\S+)")
_ENVOY_PID = re.compile(rb"envoy started \(pid (\d+)\)")


@dataclass
class CallRecord:
    app_id: str
    scenario: str
    operations: list[str] = field(default_factory=list)


@dataclass
class Tally:
    calls: dict[str, CallRecord] = field(default_factory=dict)
    connect_failures: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    statuses_by_kind: Counter[str] = field(default_factory=Counter)  # "answer 504"
    loop_lag_ms: list[float] = field(default_factory=list)  # this driver's own event loop
    not_yet_visible: int = 0  # 404s while the gateway was still reading a new call
    never_visible: int = 0
    victims_harmed: int = 0  # live calls an intruder took down or took over
    transport_errors: int = 0
    replay_mismatches: int = 0  # an idempotent retry that got a different operation
    hostile: Counter[str] = field(default_factory=Counter)
    rss_kb: dict[str, tuple[int, int]] = field(default_factory=dict)  # moment -> (gateway, envoy)
    cpu_s: dict[str, tuple[float, float]] = field(default_factory=dict)  # moment -> (gateway, envoy)


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100)[q - 1]


# -- processes --------------------------------------------------------------------------------


async def _start_receiver() -> tuple[asyncio.subprocess.Process, dict[str, int]]:
    proc = await asyncio.create_subprocess_exec(
        *die_with_parent.wrap(
            [sys.executable, str(HERE / "soak_receiver.py"), "--apps", ",".join(APPS), "--flaky", FLAKY]
        ),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    ports: dict[str, int] = {}
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().split()
        if not line:
            raise RuntimeError("the receiver exited before it was ready")
        if line[0] == "ready":
            return proc, ports
        ports[line[1]] = int(line[2])


def _write_config(run_dir: Path, ports: dict[str, int]) -> Path:
    apps = "".join(
        f'[[applications]]\nid = "{app}"\napi_key = "{API_KEY}"\n'
        f'webhook_url = "http://127.0.0.1:{ports[app]}/hooks"\nwebhook_secrets = ["{DEMO_WEBHOOK_SECRET}"]\n'
        for app in APPS
    )
    config = run_dir / "gateway.toml"
    config.write_text(
        '[grpc]\nlisten = "127.0.0.1:0"\n[esl]\nlisten = "127.0.0.1:0"\n[metrics]\nlisten = "off"\n'
        '[rest]\nlisten = "127.0.0.1:0"\nadmin = "127.0.0.1:0"\n[limits]\nrate_limit_per_s = 1000\n'
        f"[operations]\nretention_per_app = {RETENTION_PER_APP}\n"
        f'[webhooks]\noutbox_path = "{run_dir / "outbox.db"}"\nrequest_timeout_s = 1.0\n{apps}'
    )
    return config


async def _start_gateway(config: Path, log: Path) -> tuple[asyncio.subprocess.Process, Address, str, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "server")}
    # stdout carries Envoy's JSON access log.
    with log.open("ab") as stderr, log.with_name("access.log").open("ab") as stdout:
        proc = await asyncio.create_subprocess_exec(
            *die_with_parent.wrap([sys.executable, "-m", "callcontrol", "--config", str(config)]),
            cwd=ROOT, env=env, stdout=stdout, stderr=stderr,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = await asyncio.to_thread(log.read_bytes)
        esl, rest, envoy = _ESL.search(text), _REST.search(text), _ENVOY_PID.search(text)
        if esl and rest and envoy:
            return proc, Address(esl[1].decode(), int(esl[2])), rest[1].decode(), int(envoy[1])
        if proc.returncode is not None:
            raise RuntimeError(f"the gateway exited with {proc.returncode}; see {log}")
        await asyncio.sleep(0.1)  # polling the child's log for its addresses
    raise RuntimeError(f"the gateway did not come up; see {log}")


# -- the applications (REST) ------------------------------------------------------------------


class Apps:
    def __init__(self, http: aiohttp.ClientSession, rest_url: str, tally: Tally) -> None:
        self._http = http
        self._rest = rest_url
        self._tally = tally

    async def visible(self, app_id: str, session_id: str) -> bool:
        """Wait until the application sees its new call (the gateway has read its channel data)."""
        url = f"{self._rest}/api/v1/sessions/{session_id}"
        for _ in range(200):
            status = await self._request("GET", url, app_id, None, "get_session")
            if status is None:
                return False
            if status[0] != 404:
                return status[0] == 200
            self._tally.not_yet_visible += 1
            await asyncio.sleep(0.025)  # a client polling; the gateway has no "call ready" push for it
        return False

    async def command(self, app_id: str, session_id: str, verb: str, body: dict[str, str]) -> str | None:
        """The operation id of an accepted command, else None (every status is tallied)."""
        url = f"{self._rest}/api/v1/sessions/{session_id}/commands/{verb}"
        result = await self._request("POST", url, app_id, body, verb)
        if result is None or result[0] != 202:
            return None
        return str(json.loads(result[1])["operation_id"])

    async def _request(
        self, method: str, url: str, app_id: str, body: dict[str, str] | None, kind: str
    ) -> tuple[int, bytes] | None:
        headers = {"X-App-ID": app_id, "X-API-Key": API_KEY}
        try:
            async with self._http.request(method, url, json=body, headers=headers) as response:
                payload = await response.read()
        except (aiohttp.ClientError, TimeoutError):
            self._tally.transport_errors += 1
            return None
        if not (method == "GET" and response.status == 404):
            self._tally.statuses[response.status] += 1
            if response.status >= 400:
                self._tally.statuses_by_kind[f"{kind} {response.status}"] += 1
        return response.status, payload


async def _one_call(
    n: int,
    sim: FreeSwitchSimulator,
    apps: Apps,
    tally: Tally,
    rng: random.Random,
    intruders: FreeSwitchSimulator,
) -> None:
    app_id = APPS[n % len(APPS)]
    scenario = rng.choices([s for s, _ in SCENARIOS], [w for _, w in SCENARIOS])[0]
    if n % 75 == 74:
        scenario = "intruded"
    call = await sim.place_call(app_id=app_id, caller_number=f"+1555{n:07d}", answer_delay=0.02)
    if call.socket_error is not None:
        tally.connect_failures += 1
        return
    if not await apps.visible(app_id, call.uuid):
        tally.never_visible += 1
        await call.caller_hangup()
        return
    record = tally.calls[call.uuid] = CallRecord(app_id, scenario)
    talk = rng.uniform(0.05, 0.4)

    async def command(verb: str, body: dict[str, str]) -> str | None:
        op = await apps.command(app_id, call.uuid, verb, body)
        if op is not None and op not in record.operations:
            record.operations.append(op)
        return op

    if scenario == "disconnect":
        await command("disconnect", {"command_uid": f"disconnect-{n}"})
        return
    if scenario == "intruded":
        # Another peer claims this live call's Unique-ID; the gateway must refuse it
        # and go on controlling the real call.
        await _intrude(call, app_id, tally, intruders)
        if await command("hangup", {"command_uid": f"hangup-{n}", "cause": "NORMAL_CLEARING"}) is None:
            tally.victims_harmed += 1  # the real call no longer takes commands
        return
    if scenario != "quiet_caller_hangup":
        first = await command("answer", {"command_uid": f"answer-{n}"})
        again = await command("answer", {"command_uid": f"answer-{n}"})
        if first is not None and again is not None and first != again:
            tally.replay_mismatches += 1
    await asyncio.sleep(talk)
    if scenario == "answer_hangup":
        await command("hangup", {"command_uid": f"hangup-{n}", "cause": "NORMAL_CLEARING"})
    elif scenario == "answer_socket_drop":
        await call.drop_socket()
    else:
        await call.caller_hangup()


# -- hostile peers ----------------------------------------------------------------------------


async def _intrude(victim: SimulatedCall, app_id: str, tally: Tally, intruders: FreeSwitchSimulator) -> None:
    try:
        intruder = await intruders.place_call(app_id=app_id, uuid=victim.uuid, answer_delay=0.02)
    except (OSError, RuntimeError):
        tally.hostile["intruder: could not connect"] += 1
        return
    try:
        await intruder.wait_closed(10)
        tally.hostile["intruder: closed by the gateway"] += 1
    except TimeoutError:
        tally.hostile["intruder: still connected after 10 s"] += 1
        await intruder.abort()


async def _hostile(kind: str, esl: Address, tally: Tally) -> None:
    """One hostile peer; tallies whether the gateway closed it (it should, promptly)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(esl.host, esl.port), 5)
    except (OSError, TimeoutError):
        tally.hostile[f"{kind}: could not connect"] += 1
        return
    try:
        with contextlib.suppress(TimeoutError, asyncio.IncompleteReadError):
            await asyncio.wait_for(reader.readuntil(b"\n\n"), 5)  # the gateway's "connect"
        if kind == "garbage":
            writer.write(os.urandom(4096) + b"\n\n")
        else:
            writer.write(
                b"Content-Type: command/reply\nReply-Text: +OK\nContent-Length: 4096\n\n" + b"x" * 10
            )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        try:
            await asyncio.wait_for(_until_eof(reader), 15)
            tally.hostile[f"{kind}: closed by the gateway"] += 1
        except TimeoutError:
            tally.hostile[f"{kind}: still connected after 15 s"] += 1
    finally:
        writer.close()


async def _until_eof(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError):
        while await reader.read(65536):
            pass


async def _measure_lag(tally: Tally) -> None:
    while True:
        before = time.monotonic()
        await asyncio.sleep(0.1)
        tally.loop_lag_ms.append((time.monotonic() - before - 0.1) * 1000)


# -- accounting -------------------------------------------------------------------------------


@dataclass
class Accounting:
    expected: int = 0
    lost: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    duplicates: int = 0


def _account(tally: Tally, received: dict[str, list[dict[str, Any]]]) -> Accounting:
    by_session: dict[str, list[dict[str, Any]]] = {}
    seen_ids: Counter[str] = Counter()
    for rows in received.values():
        for row in rows:
            seen_ids[row["event_id"]] += 1
            if seen_ids[row["event_id"]] == 1:
                by_session.setdefault(row["session_id"], []).append(row)
    acc = Accounting(duplicates=sum(n - 1 for n in seen_ids.values()))
    for session_id, record in tally.calls.items():
        rows = by_session.get(session_id, [])
        kinds = Counter(r["type"] for r in rows)
        results = {r["operation_id"]: r for r in rows if r["type"] == "command.result"}
        answered = any(r["command"] == "answer" and r["status"] == "succeeded" for r in results.values())
        want = {
            "call.initiated": 1,
            "call.hangup": 1 if record.scenario in ENDS_WITH_HANGUP else 0,
            # A timed-out answer may still be confirmed late: then one call.answered, else none.
            "call.answered": 1 if answered else min(kinds["call.answered"], 1),
        }
        if record.scenario == "intruded":
            causes = [r["cause"] for r in rows if r["type"] == "call.hangup"]
            if causes and causes != ["NORMAL_CLEARING"]:
                acc.unexpected.append(f"{session_id} intruded: call.hangup cause {causes}, not the app's")
        for kind, count in want.items():
            acc.expected += count
            if kinds[kind] < count:
                acc.lost.append(f"{session_id} {record.app_id} {record.scenario}: {kind} missing")
            elif kinds[kind] > count:
                acc.unexpected.append(
                    f"{session_id} {record.app_id} {record.scenario}: {kinds[kind]} x {kind}"
                )
        for op in record.operations:
            acc.expected += 1
            if op not in results:
                acc.lost.append(
                    f"{session_id} {record.app_id} {record.scenario}: command.result of {op} missing"
                )
    return acc


async def _stats(http: aiohttp.ClientSession, port: int) -> dict[str, Any]:
    async with http.get(f"http://127.0.0.1:{port}/stats") as response:
        data: dict[str, Any] = await response.json()
        return data


# -- the run ----------------------------------------------------------------------------------


async def soak(
    calls: int, seconds: float, drain_seconds: float, concurrency: int, seed: int, *, baseline: bool = False
) -> dict[str, Any]:
    rng = random.Random(seed)  # noqa: S311 - a reproducible mix, not secrets
    tally = Tally()
    run_dir = Path(tempfile.mkdtemp(prefix="callcontrol-soak-"))
    receiver, ports = await _start_receiver()
    gateway: asyncio.subprocess.Process | None = None
    any_port = ports[APPS[0]]
    try:
        gateway, esl, rest_url, envoy_pid = await _start_gateway(
            _write_config(run_dir, ports), run_dir / "gateway.log"
        )
        pids = (gateway.pid, envoy_pid)

        def sample(moment: str) -> None:
            tally.rss_kb[moment] = (_rss_kb(pids[0]), _rss_kb(pids[1]))
            tally.cpu_s[moment] = (_cpu_s(pids[0]), _cpu_s(pids[1]))

        sample("start")
        lag_task = asyncio.create_task(_measure_lag(tally))
        sim = FreeSwitchSimulator(esl.host, esl.port, dialplan_playback=0.2)
        intruders = FreeSwitchSimulator(esl.host, esl.port, hostname="intruder")
        timeout = aiohttp.ClientTimeout(total=10)
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            if baseline:
                async with http.post(f"http://127.0.0.1:{any_port}/heal"):
                    pass
            apps = Apps(http, rest_url, tally)
            gate = asyncio.Semaphore(concurrency)
            tasks: set[asyncio.Task[None]] = set()
            hostile_tasks: set[asyncio.Task[None]] = set()
            started = time.monotonic()
            interval = seconds * 0.75 / calls  # pace to finish launching within the time bound
            placed = 0
            while placed < calls and time.monotonic() - started < seconds:
                await gate.acquire()
                task = asyncio.create_task(_one_call(placed, sim, apps, tally, rng, intruders))
                task.add_done_callback(tasks.discard)
                task.add_done_callback(lambda _: gate.release())
                tasks.add(task)
                placed += 1
                if placed % 25 == 0:
                    kind = HOSTILE_KINDS[(placed // 25) % len(HOSTILE_KINDS)]
                    hostile = asyncio.create_task(_hostile(kind, esl, tally))
                    hostile_tasks.add(hostile)
                if placed % max(1, calls // 10) == 0:
                    sample(f"{placed} calls placed")
                await asyncio.sleep(max(0.0, started + placed * interval - time.monotonic()))
            results = await asyncio.gather(*tasks, return_exceptions=True)
            failures = [r for r in results if isinstance(r, BaseException)]
            await asyncio.gather(*hostile_tasks, return_exceptions=True)
            run_s = time.monotonic() - started
            sample("end of calls")
            during = await _stats(http, any_port)  # what arrived while the flaky receiver misbehaved

            async with http.post(f"http://127.0.0.1:{any_port}/heal"):
                pass
            drain_started = time.monotonic()
            acc = _account(tally, (await _stats(http, any_port))["received"])
            while acc.lost and time.monotonic() - drain_started < drain_seconds:
                await asyncio.sleep(1.0)  # the outbox retries on its own schedule
                acc = _account(tally, (await _stats(http, any_port))["received"])
            drain_s = time.monotonic() - drain_started
            sample("after drain")
            lag_task.cancel()
            await sim.close()
            await intruders.close()
    finally:
        if gateway is not None and gateway.returncode is None:
            gateway.send_signal(signal.SIGTERM)
        gateway_exit = await asyncio.wait_for(gateway.wait(), 30) if gateway is not None else None
        receiver.send_signal(signal.SIGTERM)
        await receiver.wait()

    latency = {app: [r["latency_ms"] for r in rows] for app, rows in during["received"].items()}
    healthy = [v for app in HEALTHY for v in latency.get(app, [])]
    return {
        "baseline (flaky receiver healthy)": baseline,
        "calls": {
            "asked": calls,
            "placed": len(tally.calls),
            "connect_failures": tally.connect_failures,
            "never_visible": tally.never_visible,
        },
        "run_seconds": round(run_s, 1),
        "drain_seconds": round(drain_s, 1),
        "driver_errors": [repr(f) for f in failures[:5]],
        "webhooks": {
            "expected": acc.expected,
            "lost": len(acc.lost),
            "lost_examples": acc.lost[:10],
            "unexpected": len(acc.unexpected),
            "unexpected_examples": acc.unexpected[:10],
            "redelivered_duplicates": acc.duplicates,
            "flaky_refusals_during_run": during["refused"].get(FLAKY, 0),
        },
        "rest": {
            "statuses": dict(sorted(tally.statuses.items())),
            "errors_by_request": dict(sorted(tally.statuses_by_kind.items())),
            "5xx": sum(n for s, n in tally.statuses.items() if s >= 500),
            "transport_errors": tally.transport_errors,
            "not_yet_visible_retries": tally.not_yet_visible,
            "idempotent_replay_mismatches": tally.replay_mismatches,
        },
        "memory_rss_mb": {
            moment: {"gateway": round(g / 1024, 1), "envoy": round(e / 1024, 1)}
            for moment, (g, e) in tally.rss_kb.items()
        },
        "cpu_seconds_used_during_calls": {
            name: round(tally.cpu_s["end of calls"][i] - tally.cpu_s["start"][i], 1)
            for i, name in enumerate(("gateway", "envoy"))
        },
        "healthy_apps_webhook_latency_ms": {
            "count": len(healthy),
            "p50": round(_pct(healthy, 50), 1),
            "p95": round(_pct(healthy, 95), 1),
            "p99": round(_pct(healthy, 99), 1),
            "max": round(max(healthy, default=float("nan")), 1),
        },
        "flaky_app_webhook_latency_ms_p50": round(_pct(latency.get(FLAKY, []), 50), 1),
        "hostile_peers": dict(sorted(tally.hostile.items())),
        "intruded_calls_harmed": tally.victims_harmed,
        # When the driver itself lags, the simulated FreeSWITCH answers late too.
        "driver_loop_lag_ms": {
            "p50": round(_pct(tally.loop_lag_ms, 50), 1),
            "p99": round(_pct(tally.loop_lag_ms, 99), 1),
            "max": round(max(tally.loop_lag_ms, default=float("nan")), 1),
        },
        "load_average_at_end": list(os.getloadavg()),
        "gateway_exit_status": gateway_exit,
        "run_dir": str(run_dir),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=2000, help="calls to place (at most)")
    parser.add_argument("--seconds", type=float, default=120.0, help="stop placing calls after this long")
    parser.add_argument(
        "--drain-seconds", type=float, default=90.0, help="then wait at most this long for webhooks"
    )
    parser.add_argument("--concurrency", type=int, default=200, help="calls in flight at once")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--baseline", action="store_true", help="the flaky receiver behaves from the start (for comparison)"
    )
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    if args.calls < 1 or args.seconds <= 0 or args.drain_seconds < 0 or args.concurrency < 1:
        parser.error("--calls, --seconds and --concurrency must be positive")
    report = asyncio.run(
        soak(
            args.calls, args.seconds, args.drain_seconds, args.concurrency, args.seed, baseline=args.baseline
        )
    )
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    bad = (
        report["webhooks"]["lost"]
        or report["webhooks"]["unexpected"]
        or report["rest"]["5xx"]
        or report["rest"]["idempotent_replay_mismatches"]
        or report["intruded_calls_harmed"]
    )
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
