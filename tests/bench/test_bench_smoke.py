"""``scripts/bench`` in its smallest profile: every section is there and the work was done.

No timings are asserted (the machine is shared); what is checked can only fail
if a phase did not run or lost calls, commands or webhooks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import run
from benchmarks.processes import REPO, child_env

pytestmark = pytest.mark.slow


def test_smoke_run_writes_every_section(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--profile", "smoke", "--out", str(tmp_path)],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [json_path] = tmp_path.glob("*.json")
    [png_path] = tmp_path.glob("*.png")
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads(json_path.read_text())
    profile = run.PROFILES["smoke"]

    assert {
        "profile",
        "machine",
        "idle",
        "paths",
        "lifecycle",
        "memory",
        "webhooks",
        "cluster",
        "summary",
    } <= set(result)
    assert result["machine"]["cores"] >= 1
    assert {"gateway", "envoy", "simulator", "app", "loadgen", "echo"} <= set(result["idle"]["cpu_ms_per_s"])

    rows = result["paths"]["rows"]
    assert {(r["path"], r["in_flight"]) for r in rows} == {
        (path, n) for path in ("echo", "grpc", "rest") for n in profile.in_flight
    }
    for row in rows:
        assert row["requests"] > 0, row
        assert row["errors"] == {}, row
        assert row["cpu_ms"][{"echo": "echo"}.get(row["path"], "gateway")] is not None
        if row["path"] != "echo":
            assert row["requests"] == 2 * row["calls"]  # an answer and a hangup per call
            assert row["vs_echo"] > 0

    steps = result["lifecycle"]["steps"]
    assert steps, result["lifecycle"]
    for step in steps:
        assert step["complete"] == step["calls"], step  # all five webhooks of every call arrived
        assert step["webhooks"] == 5 * step["calls"]
        assert step["rpc_errors"] == {}
        assert step["cpu_ms"]["gateway"] is not None

    points = result["memory"]["points"]
    assert [p["live_calls"] for p in points] == [0, *profile.memory_calls]
    assert all(p["rss_kb"] > 0 for p in points)

    hooks = result["webhooks"]
    assert hooks["events"] == hooks["backlog"] == max(profile.memory_calls)
    assert hooks["all_delivered"]
    assert hooks["events_per_s"] > 0

    # Cluster mode, 1 then 2 replicas on a real redis-server: every call completed, and the
    # kernel spread the calls over both replicas sharing the ESL port.
    variants = result["cluster"]["variants"]
    assert [v["replicas"] for v in variants] == [1, 2], variants
    for variant in variants:
        replicas = [f"replica-{i}" for i in range(1, variant["replicas"] + 1)]
        assert variant["steps"], variant
        for step in variant["steps"]:
            assert step["complete"] == step["calls"], step
            assert step["webhooks"] == 5 * step["calls"]
            assert step["rpc_errors"] == {}
            assert step["commands_sent"] == 2 * step["calls"]
            assert list(step["calls_by_replica"]) == replicas
            assert sum(step["calls_by_replica"].values()) == step["calls"], step
            assert sum(step["webhook_attempts_by_replica"].values()) >= step["webhooks"]
            assert all(step["cpu_ms"][name] is not None for name in (*replicas, "redis", "simulator"))
    one, two = (v["steps"] for v in variants)
    assert all(step["commands_forwarded"] == 0 for step in one)
    for name in ("replica-1", "replica-2"):
        assert sum(step["calls_by_replica"][name] for step in two) > 0, two
    # Commands go to the replicas in turn: some reach the one not holding the call.
    assert sum(step["commands_forwarded"] for step in two) > 0, two

    assert len(result["summary"]) == 6 + 2 * 2
    assert "cluster, 2 replicas + Redis" in done.stdout
    assert "| what | measured | target |" in done.stdout
