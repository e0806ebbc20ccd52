"""Log output: text for a terminal (the default) or JSON lines; one record is one line.

Peer and client text (caller ids from FreeSWITCH, request ids, error details)
reaches messages as %-arguments. The guarantee that none of it can shape the
log's structure is made here, where the whole line exists, not at each call
site: the text formatter escapes every line break and control character in the
fully formatted record (message, exception and stack), and the JSON formatter
emits ASCII-only JSON, which has no raw control characters or line separators.

Request, session and operation ids live in context variables: the gRPC
interceptor sets the request id, the Event Socket link runs each call's
deliveries in a context naming the session, and an operation's deadline runs
in a context naming the operation. JSON records carry them as fields.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("callcontrol_request_id", default="-")
session_id: contextvars.ContextVar[str] = contextvars.ContextVar("callcontrol_session_id", default="-")
operation_id: contextvars.ContextVar[str] = contextvars.ContextVar("callcontrol_operation_id", default="-")
_IDS = {"request_id": request_id, "session_id": session_id, "operation_id": operation_id}


def _escapes() -> dict[int, str]:
    named = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
    # C0, DEL and C1 (NEL U+0085 among them), the Unicode line and paragraph
    # separators, and the bidirectional controls that can make a line read
    # differently from what it holds.
    points = [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029, 0x061C, 0x200E, 0x200F]
    points += [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]
    return {cp: named.get(cp) or (f"\\x{cp:02x}" if cp < 0x100 else f"\\u{cp:04x}") for cp in points}


_ESCAPES = _escapes()


def one_line(text: str) -> str:
    """``text`` with every line break and control character written as an escape."""
    if text.isprintable():  # the common case: nothing to do
        return text
    return text.translate(_ESCAPES)


def context_with(**ids: str) -> contextvars.Context:
    """A copy of the current context with some of the ids set (for callbacks and timers)."""
    context = contextvars.copy_context()
    for name, value in ids.items():
        context.run(_IDS[name].set, value)
    return context


class TextFormatter(logging.Formatter):
    """The classic one-line format, with peer text unable to start a new line."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return one_line(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the ids in context, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            # RFC 3339, UTC, milliseconds, as the webhooks write it.
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, var in _IDS.items():
            value = var.get()
            if value != "-":
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=True, default=str)


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return TextFormatter()
    raise ValueError(f"log format {log_format!r}: expected one of {', '.join(FORMATS)}")


def configure(level: str, log_format: str = "text", stream: IO[str] | None = None) -> None:
    """Send every logger's records to ``stream`` (stderr) in the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=level, handlers=[handler], force=True)
