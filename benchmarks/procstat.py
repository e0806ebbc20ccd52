"""CPU time and resident memory of processes, read from /proc (Linux only).

CPU is utime + stime of the whole process (all its threads); a process's
children are separate entries, so a change that moves work into a helper
process shows up as that helper's CPU rather than vanishing.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
TICK_S = _TICK_S  # seconds per clock tick in /proc's CPU times
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) is in parentheses and may hold spaces.
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process (every thread) has used so far."""
    fields = _stat_fields(pid)
    # After the name: state(3) ppid(4) ... utime(14) stime(15), here 0-based from state.
    return (int(fields[11]) + int(fields[12])) * _TICK_S


def system_seconds(pid: int) -> float:
    """System (kernel) CPU seconds of the process so far: the stime part of `cpu_seconds`."""
    return int(_stat_fields(pid)[12]) * _TICK_S


def rss_kb(pid: int) -> int:
    """Resident set size in kB."""
    resident_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return resident_pages * _PAGE_KB


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from every thread's children list)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.extend(int(c) for c in (task / "children").read_text().split())
        except FileNotFoundError:
            continue
    return found


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()
