"""A/B: the gateway's CPU per full call and per command pair, two code trees interleaved.

``python -m benchmarks.ab --base DIR`` runs two gateways side by side: ``base`` from
``DIR/server`` (say, an older commit unpacked with ``git archive``; its generated
``callcontrol/v1`` and ``build/`` may be symlinks to this tree's) and ``head`` from this
tree. Each round measures both, in alternating order (ABBA), so that load elsewhere on a
shared machine hits them alike:

* lifecycle: ``--rate`` calls/s for ``--seconds``, driven to the end by the application
  (answer on ``call.initiated``, hang up on ``call.answered``); gateway CPU (utime + stime
  from /proc) from the first call until the sockets have closed and the webhook queue is
  empty, per completed call;
* pairs: answer + hangup over gRPC with ``--in-flight`` in flight for ``--pair-seconds``
  on a pool of held calls; gateway CPU per command.

``--spy DIR`` also records each gateway with py-spy (``--gil``) during its first
lifecycle slice. The simulator, application and load generator are shared; their CPU is
not what this compares.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from benchmarks import procstat
from benchmarks.processes import REPO, Child, GatewayProcess
from benchmarks.run import APP_ID, PROFILES, GatewaySetup, Metrics, write_config
from benchmarks.worker import raise_fd_limit


@dataclass
class Side:
    name: str
    server: Path
    setup: GatewaySetup | None = None
    gateway: GatewayProcess | None = None
    sim: Child | None = None
    metrics: Metrics | None = None
    call_ms: list[float] = field(default_factory=list)
    command_ms: list[float] = field(default_factory=list)
    pairs_per_s: list[float] = field(default_factory=list)
    ctxt_per_call: list[float] = field(default_factory=list)
    ctxt_by_thread: dict[str, list[float]] = field(default_factory=dict)
    system_share: list[float] = field(default_factory=list)
    cpu_by_thread: dict[str, list[float]] = field(default_factory=dict)

    def cpu(self) -> float:
        assert self.gateway is not None
        return procstat.cpu_seconds(self.gateway.pid)

    def system(self) -> float:
        """System (kernel) CPU seconds: syscalls, wake-ups, context switches."""
        assert self.gateway is not None
        return procstat.system_seconds(self.gateway.pid)


def _thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (utime + stime) of ``pid``'s threads, by thread name ("main" for the loop's)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            name = "main" if task.name == str(pid) else (task / "comm").read_text().strip()
            text = (task / "stat").read_text()
            fields = text[text.rindex(")") + 2 :].split()
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) * procstat.TICK_S
    return out


def _ctxt(pid: int) -> dict[str, int]:
    """Voluntary + involuntary context switches of ``pid``'s threads, by thread name."""
    out: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            name = "main" if task.name == str(pid) else (task / "comm").read_text().strip()
            for line in (task / "status").read_text().splitlines():
                if "ctxt_switches:" in line:
                    out[name] = out.get(name, 0) + int(line.split()[-1])
    return out


async def _drained(side: Side) -> None:
    assert side.sim is not None
    assert side.metrics is not None
    await side.sim.call("settle")
    await side.metrics.drained()


async def _spy(side: Side, out: Path, native: bool) -> asyncio.subprocess.Process:
    assert side.gateway is not None
    recorder = await asyncio.create_subprocess_exec(
        str(REPO / ".venv/bin/py-spy"),
        *("record", "--pid", str(side.gateway.pid), "--gil", "--threads"),
        *(() if native else ("--nonblocking",)),
        *("--format", "raw", "--rate", "250", "-o", str(out)),
        *(("--native",) if native else ()),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(1.0)  # attached
    return recorder


async def _stop_spy(recorder: asyncio.subprocess.Process | None) -> None:
    if recorder is not None:
        recorder.send_signal(signal.SIGINT)
        await recorder.wait()


async def lifecycle(
    side: Side, app: Child, rate: float, seconds: float, spy: Path | None, native: bool = False
) -> None:
    assert side.setup is not None
    assert side.sim is not None
    assert side.gateway is not None
    n = max(1, round(rate * seconds))
    await app.call("react", addresses=[side.setup.grpc], app_id=APP_ID, api_key=side.setup.api_key)
    await app.call("reset")
    recorder = await _spy(side, spy / f"{side.name}-calls.txt", native) if spy is not None else None
    before, system, ctxt = side.cpu(), side.system(), _ctxt(side.gateway.pid)
    threads = _thread_cpu(side.gateway.pid)
    await side.sim.call("place", n=n, rate=rate, app_id=APP_ID)
    await app.call("wait_complete", n=n, wait_s=30.0)
    await _drained(side)
    spent, after = side.cpu() - before, _ctxt(side.gateway.pid)
    if spent > 0:
        side.system_share.append((side.system() - system) / spent)
    switches = {name: count - ctxt.get(name, 0) for name, count in after.items()}
    thread_spent = {name: cpu - threads.get(name, 0.0) for name, cpu in _thread_cpu(side.gateway.pid).items()}
    await _stop_spy(recorder)
    complete = (await app.call("stats"))["complete_calls"]
    await app.call("react")
    if complete:
        side.call_ms.append(spent * 1000 / complete)
        side.ctxt_per_call.append(sum(switches.values()) / complete)
        for name, count in switches.items():
            side.ctxt_by_thread.setdefault(name, []).append(count / complete)
        for name, seconds in thread_spent.items():
            side.cpu_by_thread.setdefault(name, []).append(seconds * 1000 / complete)
    if complete < n:
        print(f"  {side.name}: only {complete} of {n} calls complete", flush=True)


async def pairs(
    side: Side,
    app: Child,
    loadgen: Child,
    pool_size: int,
    in_flight: int,
    seconds: float,
    spy: Path | None = None,
) -> None:
    assert side.setup is not None
    assert side.sim is not None
    placed = await side.sim.call("place", n=pool_size, rate=300.0, app_id=APP_ID)
    await app.call("wait_sessions", session_ids=placed["session_ids"], wait_s=60.0)
    await _drained(side)
    recorder = await _spy(side, spy / f"{side.name}-pairs.txt", False) if spy is not None else None
    before = side.cpu()
    result = await loadgen.call(
        "grpc_commands",
        address=side.setup.grpc,
        app_id=APP_ID,
        api_key=side.setup.api_key,
        session_ids=placed["session_ids"],
        in_flight=in_flight,
        duration=seconds,
        raw=True,
    )
    await _drained(side)
    spent = side.cpu() - before
    await _stop_spy(recorder)
    if result["requests"]:
        side.command_ms.append(spent * 1000 / result["requests"])
        side.pairs_per_s.append(result["requests"] / 2 / result["seconds"])
    await side.sim.call("hangup_all")
    await _drained(side)


def _summary(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} (min {min(values):.2f}, n={len(values)})"


async def main_async(args: argparse.Namespace) -> None:
    raise_fd_limit()
    profile = PROFILES["quick"]
    sides = [Side("base", args.base / "server"), Side("head", REPO / "server")]
    with tempfile.TemporaryDirectory(prefix="callcontrol-ab-") as tmp:
        run_dir = Path(tmp)
        log_dir = run_dir
        async with aiohttp.ClientSession() as http:
            app = Child("app", "benchmarks.app", [], log_dir)
            loadgen = Child("loadgen", "benchmarks.loadgen", [], log_dir)
            try:
                await asyncio.gather(app.start(), loadgen.start())
                for side in sides:
                    side.setup = write_config(run_dir, str(app.hello["url"]), side.name, profile)
                    side.gateway = GatewayProcess(
                        side.setup.config_path, log_dir / f"{side.name}.log", side.server
                    )
                    await side.gateway.start()
                    side.metrics = Metrics(http, side.setup.metrics)
                    side.sim = Child(
                        f"sim-{side.name}", "benchmarks.simdriver", ["--gateway", side.setup.esl], log_dir
                    )
                    await side.sim.start()
                    print(f"{side.name}: gateway pid {side.gateway.pid} ({side.server})", flush=True)
                # Warm-up, not counted.
                for side in sides:
                    await lifecycle(side, app, args.rate, 1.0, None)
                    side.call_ms.clear()
                    side.ctxt_per_call.clear()
                for round_ in range(args.rounds):
                    order = sides if round_ % 2 == 0 else sides[::-1]
                    for side in order:
                        spy = args.spy if round_ == 0 else None
                        await lifecycle(side, app, args.rate, args.seconds, spy, args.native)
                        if args.pair_seconds > 0:
                            await pairs(side, app, loadgen, args.pool, args.in_flight, args.pair_seconds, spy)
                    print(
                        f"round {round_ + 1}: "
                        + "  ".join(
                            f"{s.name} call {s.call_ms[-1] if s.call_ms else 0:.2f} ms"
                            f" pair-cmd {s.command_ms[-1] if s.command_ms else 0:.2f} ms"
                            for s in sides
                        ),
                        flush=True,
                    )
            finally:
                for side in sides:
                    if side.sim is not None:
                        await side.sim.stop()
                    if side.gateway is not None:
                        await side.gateway.stop()
                await app.stop()
                await loadgen.stop()
    print(f"\nload average {procstat.load_average()}")
    print(f"gateway CPU ms, median of {args.rounds} interleaved rounds:")
    rows = {}
    for side in sides:
        rows[side.name] = {
            "call_ms": side.call_ms,
            "command_ms": side.command_ms,
            "pairs_per_s": side.pairs_per_s,
            "ctxt_per_call": side.ctxt_per_call,
            "ctxt_by_thread": side.ctxt_by_thread,
            "system_share": side.system_share,
            "cpu_by_thread": side.cpu_by_thread,
        }
        print(
            f"  {side.name}: per call at {args.rate:g}/s {_summary(side.call_ms)}; "
            f"per command (pairs, {args.in_flight} in flight) {_summary(side.command_ms)}; "
            f"pairs/s {_summary(side.pairs_per_s)}; context switches per call {_summary(side.ctxt_per_call)}"
        )
        by_thread = {
            n: statistics.median(v) for n, v in side.ctxt_by_thread.items() if statistics.median(v) >= 0.5
        }
        print(f"    system CPU share {_summary(side.system_share)}")
        cpu = {n: statistics.median(v) for n, v in side.cpu_by_thread.items() if statistics.median(v) >= 0.05}
        print("    CPU ms per call by thread: " + ", ".join(f"{n} {v:.2f}" for n, v in sorted(cpu.items())))
        print(
            "    context switches per call by thread: "
            + ", ".join(f"{n} {v:.1f}" for n, v in sorted(by_thread.items()))
        )
    base, head = sides
    for what, label in (("call_ms", "per call"), ("command_ms", "per command")):
        measured = list(zip(getattr(base, what), getattr(head, what), strict=False))
        if measured:
            ratios = sorted(h / b for b, h in measured if b)
            print(f"  head/base {label}, per round: {', '.join(f'{r:.3f}' for r in ratios)}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the other tree (holds server/)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--rate", type=float, default=50.0, help="calls/s in the lifecycle slices")
    parser.add_argument("--seconds", type=float, default=4.0, help="each lifecycle slice")
    parser.add_argument("--pair-seconds", type=float, default=3.0, help="each command-pair slice (0: none)")
    parser.add_argument("--pool", type=int, default=400, help="held calls for each command-pair slice")
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--spy", type=Path, help="py-spy the gateways in the first round's lifecycle")
    parser.add_argument("--native", action="store_true", help="py-spy with --native (C frames too)")
    parser.add_argument("--json", type=Path, help="write the measurements here")
    args = parser.parse_args()
    if args.spy:
        args.spy.mkdir(parents=True, exist_ok=True)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
