"""The bench's instruments: /proc readings, percentiles, the generated gateway config."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import procstat, run, worker
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


def test_system_seconds_are_the_kernel_part_of_cpu_seconds() -> None:
    before = procstat.system_seconds(os.getpid())
    end = time.process_time() + 0.2
    while time.process_time() < end:
        os.stat("/")  # a syscall per turn: some of it is kernel time
    system = procstat.system_seconds(os.getpid())
    assert system > before
    assert system <= procstat.cpu_seconds(os.getpid())
