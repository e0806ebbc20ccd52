"""Reads the captured FreeSWITCH Event Socket transcripts (``shared/freeswitch-esl/*.txt``).

Capture format (see README.txt beside the files): a marker line
``>>> [conn] C->FS t=+0.123s len=N`` or ``<<< [conn] FS->C t=+0.125s len=N``,
then exactly N raw bytes, then one ``\\n``. Lines starting with ``### `` between
records are the harness's notes, not wire data.

The folder sits beside the repository (``<repo>/../shared``); tests skip with
a clear reason when it is absent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import pytest

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
TRANSCRIPTS_DIR: Final = REPO_ROOT.parent / "shared" / "freeswitch-esl"
# The folder's README and the SIP messages logged by sipp are not Event Socket records.
NOT_ESL: Final = frozenset({"05-sipp-sip-messages.txt", "README.txt"})

_MARKER: Final = re.compile(rb"(>>>|<<<) \[([^\]]+)\] (C->FS|FS->C) t=\+([0-9.]+)s len=([0-9]+)\n")

Direction = Literal["C->FS", "FS->C"]


@dataclass(frozen=True, slots=True)
class Record:
    """One captured write: who sent it, on which connection, and the exact bytes."""

    connection: str
    direction: Direction
    seconds: float
    data: bytes


@dataclass(frozen=True, slots=True)
class Transcript:
    name: str
    records: tuple[Record, ...]

    def connections(self) -> list[str]:
        seen: dict[str, None] = {}
        for record in self.records:
            seen.setdefault(record.connection)
        return list(seen)

    def select(self, connection: str, direction: Direction) -> list[Record]:
        return [r for r in self.records if r.connection == connection and r.direction == direction]

    def stream(self, connection: str, direction: Direction) -> bytes:
        """The exact byte stream of one direction of one connection."""
        return b"".join(r.data for r in self.select(connection, direction))


def require_dir() -> Path:
    """The transcripts folder, or skip the calling test with the reason."""
    if not TRANSCRIPTS_DIR.is_dir():
        pytest.skip(
            f"FreeSWITCH transcripts not found at {TRANSCRIPTS_DIR} (shared/ must sit beside the repo)"
        )
    return TRANSCRIPTS_DIR


def esl_files() -> list[str]:
    """Names of every ESL transcript (empty when the folder is absent, so parametrize still works)."""
    if not TRANSCRIPTS_DIR.is_dir():
        return []
    return sorted(p.name for p in TRANSCRIPTS_DIR.glob("*.txt") if p.name not in NOT_ESL)


def parse(data: bytes, name: str = "<bytes>") -> Transcript:
    """Split a capture into records; anything between records must be a note or a blank line."""
    records: list[Record] = []
    pos = 0
    while pos < len(data):
        if data.startswith(b"### ", pos) or data.startswith(b"\n", pos):
            end = data.find(b"\n", pos)
            pos = len(data) if end < 0 else end + 1
            continue
        match = _MARKER.match(data, pos)
        if match is None:
            raise ValueError(f"{name}: unexpected bytes at offset {pos}: {data[pos : pos + 60]!r}")
        length = int(match.group(5))
        start = match.end()
        if data[start + length : start + length + 1] != b"\n":
            raise ValueError(f"{name}: record at offset {pos} is not followed by a newline")
        direction: Direction = "C->FS" if match.group(3) == b"C->FS" else "FS->C"
        records.append(
            Record(match.group(2).decode(), direction, float(match.group(4)), data[start : start + length])
        )
        pos = start + length + 1
    return Transcript(name, tuple(records))


def load(name: str) -> Transcript:
    """One transcript by file name (skips the test when the folder is absent)."""
    path = require_dir() / name
    return parse(path.read_bytes(), name)
