"""scripts/build_proto.py: quiet when it works, protoc's own words when it does not."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build_proto.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_proto", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_build_prints_one_line_not_the_plugins_chatter() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "Writing mypy" not in done.stderr
    assert done.stderr.splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("generated ")


def test_a_failing_protoc_shows_what_it_said(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="protoc failed"):
        _script()._run(["--no-such-flag"])
    assert "no-such-flag" in capfd.readouterr().err
