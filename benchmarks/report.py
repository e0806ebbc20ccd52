"""The bench's results as a summary, Markdown tables and a PNG chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

Json = dict[str, Any]
GATEWAY_SIDE = ("gateway", "envoy")  # what the gateway costs, wherever it moved the work
TARGETS = {
    "cpu_per_call": "≤ 3 ms",
    "sustained": "≥ 300",
    "grpc": "≥ 40 %",
    "rest": "≥ 35 %",
    "memory": "≤ 25 kB",
    "backlog": "≥ 10,000 events/s",
}


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _path_row(result: Json, path: str, in_flight: int) -> Json | None:
    for row in result.get("paths", {}).get("rows", []):
        if row.get("path") == path and row.get("in_flight") == in_flight:
            return dict(row)
    return None


def _reference_in_flight(result: Json) -> int | None:
    levels = [r["in_flight"] for r in result.get("paths", {}).get("rows", []) if "path" in r]
    if not levels:
        return None
    return 16 if 16 in levels else max(levels)


def summary(result: Json) -> list[Json]:
    """The issue's table: what, measured, target."""
    rows: list[Json] = []
    life = result.get("lifecycle", {})
    # CPU per call does not depend on the lag verdict: the highest rate whose calls all completed.
    complete = [s for s in life.get("steps", []) if "cpu_ms" in s and s["complete"] == s["calls"]]
    if complete:
        step = max(complete, key=lambda s: float(s["rate"]))
        cpu = step["cpu_ms"]
        gateway = sum(cpu.get(p) or 0.0 for p in GATEWAY_SIDE)
        others = ", ".join(f"{k} {_fmt(v, 2)}" for k, v in cpu.items() if k not in GATEWAY_SIDE and v)
        measured = f"{gateway:.2f} ms at {step['rate']:g} calls/s (others: {others})"
    else:
        measured = "- (no call rate completed)"
    rows.append(
        {
            "what": "gateway CPU per full call (connect, answer, hangup, 5 webhooks)",
            "measured": measured,
            "target": TARGETS["cpu_per_call"],
        }
    )
    knee = life.get("knee_rate")
    why: list[str] = next(
        (s["why_not"] for s in reversed(life.get("steps", [])) if s.get("why_not") and s["rate"] == knee), []
    )
    rows.append(
        {
            "what": f"calls/s sustained (webhook lag p99 < {life.get('lag_limit_ms', 50):g} ms)",
            "measured": f"{_fmt(life.get('sustained_calls_per_s'), 0)}"
            + (
                f" (knee at {knee:g}: {'; '.join(why)})"
                if knee is not None
                else " (no knee within the rates tried)"
            ),
            "target": TARGETS["sustained"],
        }
    )
    n = _reference_in_flight(result)
    for path, label in (("grpc", "over gRPC"), ("rest", "over REST through Envoy")):
        row, echo = _path_row(result, path, n or 0), _path_row(result, "echo", n or 0)
        if row and echo:
            measured = (
                f"{_fmt(row['per_s'], 0)} vs {_fmt(echo['per_s'], 0)} ({row.get('vs_echo', 0) * 100:.1f} %)"
            )
        else:
            measured = "-"
        rows.append(
            {
                "what": f"answer+hangup commands/s {label}, {n} in flight, vs a bare grpc.aio echo",
                "measured": measured,
                "target": TARGETS[path],
            }
        )
    points = [p for p in result.get("memory", {}).get("points", []) if p.get("kb_per_call") is not None]
    measured = ", ".join(f"{p['kb_per_call']:.1f} kB at {p['live_calls']:,}" for p in points) or "-"
    if points:
        measured += f" ({points[-1]['rss_kb'] / 1024:.0f} MB RSS at {points[-1]['live_calls']:,})"
    rows.append({"what": "resident memory per live call", "measured": measured, "target": TARGETS["memory"]})
    hooks = result.get("webhooks", {})
    rows.append(
        {
            "what": "webhook delivery, signed and durable, from a backlog",
            "measured": f"{_fmt(hooks.get('events_per_s'), 0)} events/s ({hooks.get('events', 0):,} events)",
            "target": TARGETS["backlog"],
        }
    )
    return rows


def _md(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _cpu(cpu: dict[str, float | None]) -> str:
    return " · ".join(f"{k} {v:.2f}" for k, v in cpu.items() if v)


def table(result: Json) -> str:
    m = result["machine"]
    out = [
        f"Machine: {m['cores']} cores, {m['cpu_model']}, Python {m['python']}; load average "
        f"{m['load_average'][0]:.1f} at start, {m.get('load_average_end', [0.0])[0]:.1f} at end. "
        f"Profile: {result['profile']['name']}.",
        "",
        _md(
            ["what", "measured", "target"],
            [[r["what"], r["measured"], r["target"]] for r in result["summary"]],
        ),
        "",
        "Paths (requests/s with N in flight; CPU ms per request by process):",
        "",
    ]
    rows = []
    for r in result.get("paths", {}).get("rows", []):
        if "skipped" in r:
            rows.append(["-", str(r["in_flight"]), f"skipped: {r['skipped']}", "", "", "", ""])
            continue
        errors = sum(r["errors"].values())
        rows.append(
            [
                r["path"],
                str(r["in_flight"]),
                _fmt(r["per_s"], 0),
                f"{r.get('vs_echo', 1.0) * 100:.1f} %",
                _fmt(r["latency"]["p50_ms"], 2),
                _fmt(r["latency"]["p99_ms"], 2),
                _cpu(r["cpu_ms"]) + (f" ({errors} errors)" if errors else ""),
            ]
        )
    out.append(_md(["path", "in flight", "req/s", "vs echo", "p50 ms", "p99 ms", "CPU ms/request"], rows))
    life = result.get("lifecycle", {})
    out += ["", "Full call lifecycle at rising call rates (CPU ms per completed call):", ""]
    rows = []
    for s in life.get("steps", []):
        if "skipped" in s:
            rows.append([f"{s['rate']:g}", "", "", "", "", f"skipped: {s['skipped']}"])
            continue
        rows.append(
            [
                f"{s['rate']:g}" + (" (again)" if s.get("attempt") == 2 else ""),
                f"{s['complete']}/{s['calls']}",
                _fmt(s["lag"]["p50_ms"], 1),
                _fmt(s["lag"]["p99_ms"], 1),
                _cpu(s["cpu_ms"]),
                "ok" if s["ok"] else "; ".join(s["why_not"]),
            ]
        )
    out.append(_md(["calls/s", "complete", "lag p50 ms", "lag p99 ms", "CPU ms/call", "verdict"], rows))
    mem = result.get("memory", {})
    out += ["", "Gateway memory with live calls:", ""]
    out.append(
        _md(
            ["live calls", "RSS MB", "kB per call"],
            [
                [f"{p['live_calls']:,}", f"{p['rss_kb'] / 1024:.1f}", _fmt(p.get("kb_per_call"), 1)]
                for p in mem.get("points", [])
            ],
        )
    )
    out += [f"- {note}" for note in mem.get("notes", [])]
    hooks = result.get("webhooks", {})
    if "events_per_s" in hooks:
        out += [
            "",
            f"Webhook backlog: {hooks['events']:,} events (queue {hooks['backlog']:,}) delivered in "
            f"{hooks['seconds']} s = {_fmt(hooks['events_per_s'], 0)} events/s; "
            f"CPU ms per event: {_cpu(hooks['cpu_ms'])}",
        ]
    elif hooks:
        out += ["", f"Webhook backlog: {hooks.get('skipped', 'not measured')}"]
    return "\n".join(out)


def chart(result: Json, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ((thr, lat), (cpu_ax, mem_ax)) = plt.subplots(2, 2, figsize=(13, 9))
    rows = [r for r in result.get("paths", {}).get("rows", []) if "path" in r]
    for path_name in ("echo", "grpc", "rest"):
        mine = [r for r in rows if r["path"] == path_name]
        xs = [r["in_flight"] for r in mine]
        thr.plot(xs, [r["per_s"] for r in mine], marker="o", label=path_name)
        lat.plot(xs, [r["latency"]["p50_ms"] for r in mine], marker="o", label=f"{path_name} p50")
        lat.plot(
            xs, [r["latency"]["p99_ms"] for r in mine], marker="x", linestyle="--", label=f"{path_name} p99"
        )
    for ax, title, unit in ((thr, "throughput per path", "requests/s"), (lat, "latency per path", "ms")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("in flight")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.legend(fontsize=8)
    steps = [s for s in result.get("lifecycle", {}).get("steps", []) if "cpu_ms" in s]
    if steps:
        procs = sorted({k for s in steps for k, v in s["cpu_ms"].items() if v})
        labels = [f"{s['rate']:g}" + (" again" if s.get("attempt") == 2 else "") for s in steps]
        bottom = [0.0] * len(steps)
        for proc in procs:
            values = [s["cpu_ms"].get(proc) or 0.0 for s in steps]
            cpu_ax.bar(labels, values, bottom=bottom, label=proc)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        twin = cpu_ax.twinx()
        twin.plot(
            labels, [s["lag"]["p99_ms"] or 0.0 for s in steps], color="black", marker="o", label="lag p99"
        )
        twin.axhline(result["lifecycle"]["lag_limit_ms"], color="red", linestyle=":", linewidth=1)
        twin.set_ylabel("webhook lag p99 ms")
        twin.set_ylim(bottom=0)
        cpu_ax.legend(fontsize=8, loc="upper left")
    cpu_ax.set_title("CPU per full call by process")
    cpu_ax.set_xlabel("calls/s")
    cpu_ax.set_ylabel("CPU ms per call")
    points = result.get("memory", {}).get("points", [])
    if points:
        mem_ax.plot([p["live_calls"] for p in points], [p["rss_kb"] / 1024 for p in points], marker="o")
        for p in points:
            if p.get("kb_per_call") is not None:
                mem_ax.annotate(
                    f"{p['kb_per_call']:.1f} kB/call", (p["live_calls"], p["rss_kb"] / 1024), fontsize=8
                )
    mem_ax.set_title("gateway memory per live call")
    mem_ax.set_xlabel("live calls")
    mem_ax.set_ylabel("RSS MB")
    m = result["machine"]
    fig.suptitle(
        f"callcontrol bench {result['started'][:19]}Z, {m['cores']} cores {m['cpu_model']}, "
        f"profile {result['profile']['name']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
