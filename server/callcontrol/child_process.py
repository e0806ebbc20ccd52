"""Stopping a child process: politely first, for sure in the end."""

from __future__ import annotations

import asyncio
import contextlib
import signal


async def terminate(proc: asyncio.subprocess.Process, grace: float) -> bool:
    """SIGTERM, then SIGKILL after ``grace`` seconds; True if it had to be killed. Idempotent."""
    if proc.returncode is not None:
        return False
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return True
    return False
