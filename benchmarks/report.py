"""The bench's results as a summary, Markdown tables and a PNG chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

Json = dict[str, Any]
GATEWAY_SIDE = ("gateway", "envoy")  # what the gateway costs, wherever it moved the work
# In a cluster: every replica, its Envoy, and Redis (where the webhooks and the directory went).
CLUSTER_SIDE = ("replica-", "envoy-", "redis")
TARGETS = {
    "cpu_per_call": "≤ 3 ms",
    "sustained": "≥ 300",
    "grpc": "≥ 40 %",
    "rest": "≥ 35 %",
    "memory": "≤ 25 kB",
    "backlog": "≥ 10,000 events/s",
    "cluster": "measured (issue 10)",
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


def _gateway_side(name: str, side: tuple[str, ...]) -> bool:
    return name.startswith(side)


def top_complete_step(steps: list[Json]) -> Json | None:
    """CPU per call does not depend on the lag verdict: the highest rate whose calls all completed."""
    complete = [s for s in steps if "cpu_ms" in s and s["complete"] == s["calls"]]
    return max(complete, key=lambda s: float(s["rate"])) if complete else None


def cpu_per_call(steps: list[Json], side: tuple[str, ...]) -> str:
    step = top_complete_step(steps)
    if step is None:
        return "- (no call rate completed)"
    cpu = step["cpu_ms"]
    mine = {k: v for k, v in cpu.items() if _gateway_side(k, side) and v}
    others = ", ".join(f"{k} {_fmt(v, 2)}" for k, v in cpu.items() if not _gateway_side(k, side) and v)
    # A cluster's parts are listed (every replica, its Envoy, Redis); one gateway's are summed as before.
    parts = f"{', '.join(f'{k} {v:.2f}' for k, v in mine.items())}; " if side == CLUSTER_SIDE else ""
    return f"{sum(mine.values()):.2f} ms at {step['rate']:g} calls/s ({parts}others: {others})"


def sustained(life: Json) -> str:
    knee = life.get("knee_rate")
    why: list[str] = next(
        (s["why_not"] for s in reversed(life.get("steps", [])) if s.get("why_not") and s["rate"] == knee), []
    )
    return f"{_fmt(life.get('sustained_calls_per_s'), 0)}" + (
        f" (knee at {knee:g}: {'; '.join(why)})" if knee is not None else " (no knee within the rates tried)"
    )


def _lag_at_sustained(life: Json) -> str:
    rate = life.get("sustained_calls_per_s")
    step = next((s for s in reversed(life.get("steps", [])) if s.get("ok") and s["rate"] == rate), None)
    if step is None:
        return ""
    return (
        f"; webhook lag p50 {_fmt(step['lag']['p50_ms'], 1)} / p99 {_fmt(step['lag']['p99_ms'], 1)} ms there"
    )


def _cluster_summary(result: Json) -> list[Json]:
    rows: list[Json] = []
    for v in result.get("cluster", {}).get("variants", []):
        label = f"cluster, {v['replicas']} replica{'s' if v['replicas'] > 1 else ''} + Redis"
        if "skipped" in v:
            rows.append({"what": label, "measured": f"skipped: {v['skipped']}", "target": TARGETS["cluster"]})
            continue
        rows.append(
            {
                "what": f"{label}: calls/s sustained (webhook lag p99 < {v.get('lag_limit_ms', 50):g} ms)",
                "measured": sustained(v) + _lag_at_sustained(v),
                "target": TARGETS["cluster"],
            }
        )
        rows.append(
            {
                "what": f"{label}: CPU per full call, replicas + Envoys + Redis",
                "measured": cpu_per_call(v.get("steps", []), CLUSTER_SIDE),
                "target": TARGETS["cluster"],
            }
        )
    return rows


def summary(result: Json) -> list[Json]:
    """The issue's table: what, measured, target (for the phases that ran)."""
    rows: list[Json] = []
    if "lifecycle" in result:
        life = result["lifecycle"]
        rows.append(
            {
                "what": "gateway CPU per full call (connect, answer, hangup, 5 webhooks)",
                "measured": cpu_per_call(life.get("steps", []), GATEWAY_SIDE),
                "target": TARGETS["cpu_per_call"],
            }
        )
        rows.append(
            {
                "what": f"calls/s sustained (webhook lag p99 < {life.get('lag_limit_ms', 50):g} ms)",
                "measured": sustained(life),
                "target": TARGETS["sustained"],
            }
        )
    n = _reference_in_flight(result)
    for path, label in (
        (("grpc", "over gRPC"), ("rest", "over REST through Envoy")) if "paths" in result else ()
    ):
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
    if "memory" in result:
        points = [p for p in result["memory"].get("points", []) if p.get("kb_per_call") is not None]
        measured = ", ".join(f"{p['kb_per_call']:.1f} kB at {p['live_calls']:,}" for p in points) or "-"
        if points:
            measured += f" ({points[-1]['rss_kb'] / 1024:.0f} MB RSS at {points[-1]['live_calls']:,})"
        rows.append(
            {"what": "resident memory per live call", "measured": measured, "target": TARGETS["memory"]}
        )
    if "webhooks" in result:
        hooks = result["webhooks"]
        rate = _fmt(hooks.get("events_per_s"), 0)
        rows.append(
            {
                "what": "webhook delivery, signed and durable, from a backlog",
                "measured": f"{rate} events/s ({hooks.get('events', 0):,} events)",
                "target": TARGETS["backlog"],
            }
        )
    return rows + _cluster_summary(result)


def _md(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _cpu(cpu: dict[str, float | None]) -> str:
    return " · ".join(f"{k} {v:.2f}" for k, v in cpu.items() if v)


def _lifecycle_table(steps: list[Json], cluster: bool = False) -> str:
    headers = ["calls/s", "complete", "lag p50 ms", "lag p99 ms", "emit ms (mean)", "CPU ms/call"]
    if cluster:
        headers += ["calls per replica", "forwarded", "webhooks sent by"]
    headers.append("verdict")
    rows = []
    for s in steps:
        if "skipped" in s:
            rows.append([f"{s['rate']:g}", *[""] * (len(headers) - 2), f"skipped: {s['skipped']}"])
            continue
        row = [
            f"{s['rate']:g}" + (" (again)" if s.get("attempt") == 2 else ""),
            f"{s['complete']}/{s['calls']}",
            _fmt(s["lag"]["p50_ms"], 1),
            _fmt(s["lag"]["p99_ms"], 1),
            _fmt(s.get("emit_ms_mean"), 2),
            _cpu(s["cpu_ms"]),
        ]
        if cluster:
            row += [
                " · ".join(f"{k} {v}" for k, v in s["calls_by_replica"].items()),
                f"{s['commands_forwarded']} of {s['commands_sent']}",
                " · ".join(f"{k} {v}" for k, v in s["webhook_attempts_by_replica"].items() if v) or "-",
            ]
        rows.append([*row, "ok" if s["ok"] else "; ".join(s["why_not"])])
    return _md(headers, rows)


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
    ]
    if "paths" in result:
        out += ["", "Paths (requests/s with N in flight; CPU ms per request by process):", ""]
        rows = []
        for r in result["paths"].get("rows", []):
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
    if "lifecycle" in result:
        out += ["", "Full call lifecycle at rising call rates (CPU ms per completed call):", ""]
        out.append(_lifecycle_table(result["lifecycle"].get("steps", [])))
    if "memory" in result:
        out += ["", "Gateway memory with live calls:", ""]
        out.append(
            _md(
                ["live calls", "RSS MB", "kB per call"],
                [
                    [f"{p['live_calls']:,}", f"{p['rss_kb'] / 1024:.1f}", _fmt(p.get("kb_per_call"), 1)]
                    for p in result["memory"].get("points", [])
                ],
            )
        )
        out += [f"- {note}" for note in result["memory"].get("notes", [])]
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
    for v in result.get("cluster", {}).get("variants", []):
        n = v["replicas"]
        out += [
            "",
            f"Cluster, {n} replica{'s' if n > 1 else ''} on one redis-server "
            f"(appendfsync {result.get('redis_appendfsync', 'always')}; CPU ms per completed call):",
        ]
        if "skipped" in v:
            out.append(f"skipped: {v['skipped']}")
            continue
        idle_cpu = v["idle"]["cpu_ms_per_s"]
        out += [
            f"Idle CPU ms/s: {' · '.join(f'{k} {x:.2f}' for k, x in idle_cpu.items() if x)}",
            "",
            _lifecycle_table(v.get("steps", []), cluster=True),
        ]
    return "\n".join(out)


def chart(result: Json, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = [v for v in result.get("cluster", {}).get("variants", []) if "steps" in v]
    fig, axes = plt.subplots(3 if variants else 2, 2, figsize=(13, 13.5 if variants else 9), squeeze=False)
    (thr, lat), (cpu_ax, mem_ax) = axes[0], axes[1]
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
        if rows:  # a log scale needs data (the paths phase may not have run)
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
    if variants:
        _cluster_chart(result, variants, axes[2][0], axes[2][1])
    m = result["machine"]
    fig.suptitle(
        f"callcontrol bench {result['started'][:19]}Z, {m['cores']} cores {m['cpu_model']}, "
        f"profile {result['profile']['name']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _cluster_chart(result: Json, variants: list[Json], cpu_ax: Any, rate_ax: Any) -> None:
    """One gateway against 1 and 2 cluster replicas: CPU per call by process, calls/s sustained."""
    runs = [("1 gateway", result.get("lifecycle", {}))] if "lifecycle" in result else []
    runs += [(f"{v['replicas']} replica{'s' if v['replicas'] > 1 else ''}", v) for v in variants]
    # CPU per call falls with the rate (idle timers spread thinner): compare at one rate if all completed it.
    done = [
        {s["rate"]: s for s in run.get("steps", []) if "cpu_ms" in s and s["complete"] == s["calls"]}
        for _, run in runs
    ]
    common = set.intersection(*(set(d) for d in done)) if done else set()
    tops = (
        [d[max(common)] for d in done]
        if common
        else [top_complete_step(run.get("steps", [])) for _, run in runs]
    )
    labels = [
        f"{name}\n@{top['rate']:g}/s" if top else name for (name, _), top in zip(runs, tops, strict=True)
    ]
    procs = sorted({k for top in tops if top for k, v in top["cpu_ms"].items() if v})
    bottom = [0.0] * len(runs)
    for proc in procs:
        values = [(top["cpu_ms"].get(proc) or 0.0) if top else 0.0 for top in tops]
        cpu_ax.bar(labels, values, bottom=bottom, label=proc)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    cpu_ax.set_title(
        "CPU per full call by process" + (" (same rate)" if common else " (highest rate completed)")
    )
    cpu_ax.set_ylabel("CPU ms per call")
    cpu_ax.legend(fontsize=7, ncol=2)
    rate_ax.bar([name for name, _ in runs], [run.get("sustained_calls_per_s") or 0 for _, run in runs])
    rate_ax.set_title(f"calls/s sustained (webhook lag p99 < {variants[0]['lag_limit_ms']:g} ms)")
    rate_ax.set_ylabel("calls/s")
