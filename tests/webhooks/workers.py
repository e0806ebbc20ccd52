"""Webhook worker processes (``crash_worker``, ``cluster_worker``) the crash and failover tests kill."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from callcontrol import die_with_parent

ROOT = Path(__file__).resolve().parents[2]
SESSIONS, PER_SESSION = 40, 5  # the events each worker emits
ACK_BEFORE_STALL = 30  # the receiver acknowledges this many, then holds every request


async def start_worker(module: str, log: Path, *args: str) -> asyncio.subprocess.Process:
    """``python -m tests.webhooks.<module>`` with SESSIONS x PER_SESSION unless ``args`` say otherwise
    (the last of a repeated option counts); its stdout is the test's."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "server"), str(ROOT)])}
    argv = [sys.executable, "-m", f"tests.webhooks.{module}"]
    argv += ["--sessions", str(SESSIONS), "--per-session", str(PER_SESSION), *args]
    with log.open("wb") as stderr:  # the child keeps its own copy
        return await asyncio.create_subprocess_exec(
            *die_with_parent.wrap(argv), cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=stderr
        )
