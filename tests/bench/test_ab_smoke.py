"""``python -m benchmarks.ab`` on two copies of this tree: both gateways measured, nothing lost.

No timings are asserted (the machine is shared); what is checked can only fail if a side did
not run, lost calls or measured nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.processes import REPO, child_env

pytestmark = pytest.mark.slow


def test_ab_measures_both_trees(tmp_path: Path) -> None:
    out = tmp_path / "ab.json"
    argv = [sys.executable, "-m", "benchmarks.ab", "--base", str(REPO), "--rounds", "1"]
    argv += ["--rate", "20", "--seconds", "0.5", "--pair-seconds", "0.3", "--pool", "20", "--json", str(out)]
    done = subprocess.run(
        argv, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=110, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "only" not in done.stdout  # "<side>: only N of M calls complete"
    result = json.loads(out.read_text())
    assert set(result) == {"base", "head"}
    for side in result.values():
        [per_call] = side["call_ms"]
        assert per_call > 0
        [per_command] = side["command_ms"]
        assert per_command > 0
        assert side["cpu_by_thread"]["main"][0] > 0
