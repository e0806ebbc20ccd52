"""The bench's instruments: /proc readings, percentiles, the generated gateway config."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import procstat, report, run, worker
from callcontrol.config import GatewayConfig, load_file


def test_children_and_cpu_of_a_busy_child() -> None:
    # The child burns 0.2 s of its own CPU, then says so and waits to be read.
    code = (
        "import sys, time\n"
        "while time.process_time() < 0.2: pass\n"
        "print('done', flush=True); sys.stdin.read()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"done\n"
        assert proc.pid in procstat.children(os.getpid())
        assert procstat.cpu_seconds(proc.pid) >= 0.19
        assert procstat.rss_kb(proc.pid) > 1000
    finally:
        proc.communicate(b"")


def test_cpu_seconds_counts_this_process() -> None:
    before = procstat.cpu_seconds(os.getpid())
    end = time.process_time() + 0.1
    while time.process_time() < end:
        pass
    assert procstat.cpu_seconds(os.getpid()) - before >= 0.08


def test_percentiles() -> None:
    values = [n / 1000 for n in range(1, 101)]  # 1..100 ms
    got = worker.percentiles(values)
    assert got == {"p50_ms": 51.0, "p99_ms": 100.0, "max_ms": 100.0, "n": 100}
    assert worker.percentiles([])["p99_ms"] is None


def test_generated_config_passes_the_gateways_strict_loader(tmp_path: Path) -> None:
    profile = run.PROFILES["full"]
    setup = run.write_config(tmp_path, "http://127.0.0.1:9/hooks", "t", profile)
    cfg = load_file(setup.config_path, GatewayConfig(simulator=False))
    assert cfg.simulator is False
    assert cfg.limits.rate_limit_per_s == 0
    assert cfg.limits.auth_failures_per_minute == 0
    assert cfg.esl.max_connections >= max(profile.memory_calls) + profile.pool
    assert str(cfg.grpc_listen) == setup.grpc
    assert str(cfg.esl.listen) == setup.esl
    app = cfg.application(run.APP_ID)
    assert app is not None
    assert app.webhook_url == "http://127.0.0.1:9/hooks"
    assert app.webhook_secrets
    # The outbox is a file (durable, as in production), inside the run directory.
    assert Path(cfg.webhooks.outbox_path).parent == tmp_path


def test_replica_configs_share_the_esl_port_and_the_application(tmp_path: Path) -> None:
    profile = run.PROFILES["smoke"]
    url = "redis://127.0.0.1:6379/0"
    first = run.write_config(tmp_path, "http://127.0.0.1:9/hooks", "c-1", profile, redis_url=url)
    second = run.write_config(tmp_path, "http://127.0.0.1:9/hooks", "c-2", profile, redis_url=url, like=first)
    one, two = (load_file(s.config_path, GatewayConfig(simulator=False)) for s in (first, second))
    assert one.cluster.redis_url == two.cluster.redis_url == url
    assert one.cluster.replica_id != two.cluster.replica_id
    assert str(one.esl.listen) == str(two.esl.listen) == first.esl  # SO_REUSEPORT in cluster mode
    assert one.grpc_listen != two.grpc_listen
    assert one.metrics_listen != two.metrics_listen
    # Every replica needs the same application: key and webhook secret.
    assert one.applications == two.applications
    # The single gateway stays without Redis.
    plain = run.write_config(tmp_path, "http://127.0.0.1:9/hooks", "p", profile)
    assert not load_file(plain.config_path, GatewayConfig(simulator=False)).cluster.enabled


def test_phases_option_keeps_the_run_order_and_refuses_unknown_names() -> None:
    assert run._phases("cluster, lifecycle") == ("lifecycle", "cluster")
    with pytest.raises(argparse.ArgumentTypeError, match="unknown phase"):
        run._phases("cluster,nonsense")
    with pytest.raises(argparse.ArgumentTypeError, match="no phase"):
        run._phases(" , ")


def test_cluster_summary_sums_and_lists_every_replica_and_redis() -> None:
    def step(rate: float, ok: bool, cpu: dict[str, float]) -> dict[str, object]:
        return {
            "rate": rate,
            "calls": 10,
            "complete": 10,
            "ok": ok,
            "why_not": [] if ok else ["webhook lag p99 80 ms >= 50"],
            "lag": {"p50_ms": 5.0, "p99_ms": 20.0 if ok else 80.0},
            "cpu_ms": cpu,
        }

    cpu = {
        "replica-1": 20.0,
        "envoy-1": 0.5,
        "replica-2": 10.0,
        "envoy-2": 0.5,
        "redis": 6.0,
        "simulator": 8.0,
    }
    variant = {
        "replicas": 2,
        "lag_limit_ms": 50.0,
        "steps": [step(10, True, cpu), step(20, False, cpu), step(20, False, cpu)],
        "sustained_calls_per_s": 10,
        "knee_rate": 20,
    }
    one = {**variant, "replicas": 1, "steps": [step(10, True, {"replica-1": 25.0, "redis": 6.0, "app": 5.0})]}
    skipped = {"replicas": 2, "skipped": "time budget"}
    rows = report.summary({"cluster": {"variants": [variant, one, skipped]}})
    texts = [r["measured"] for r in rows]
    assert texts[0].startswith("10 (knee at 20: webhook lag p99 80 ms >= 50)")
    assert "p99 20.0 ms there" in texts[0]
    # The gateway side is every replica, its Envoy and Redis; the simulator is listed apart.
    assert texts[1].startswith("37.00 ms at 20 calls/s")
    assert "replica-1 20.00, envoy-1 0.50, replica-2 10.00, envoy-2 0.50, redis 6.00" in texts[1]
    assert "others: simulator 8.00" in texts[1]
    # One replica too: its parts listed, not only summed.
    assert texts[3] == "31.00 ms at 10 calls/s (replica-1 25.00, redis 6.00; others: app 5.00)"
    assert texts[4] == "skipped: time budget"


def test_system_seconds_are_the_kernel_part_of_cpu_seconds() -> None:
    before = procstat.system_seconds(os.getpid())
    end = time.process_time() + 0.2
    while time.process_time() < end:
        os.stat("/")  # a syscall per turn: some of it is kernel time
    system = procstat.system_seconds(os.getpid())
    assert system > before
    assert system <= procstat.cpu_seconds(os.getpid())
