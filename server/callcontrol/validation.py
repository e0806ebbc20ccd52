"""Request checks that run before anything reaches FreeSWITCH.

Every value that can end up in an ESL frame is checked here against a strict
pattern, so client text can never carry a newline or a header onto the wire.
"""

from __future__ import annotations

import re
import uuid

from callcontrol.causes import Q850_CAUSES
from callcontrol.errors import FieldViolation, InvalidArgument

_COMMAND_UID = re.compile(r"[a-zA-Z0-9._-]{1,128}")
_CAUSE = re.compile(r"[A-Z_]{1,64}")
DEFAULT_CAUSE = "NORMAL_CLEARING"
# Every list endpoint: at most this many items per page, DEFAULT_PAGE_SIZE when 0.
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100


def session_id_violation(value: str, field: str = "session_id") -> FieldViolation | None:
    if not value:
        return FieldViolation(field, "required")
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return FieldViolation(field, "must be a UUID")
    # FreeSWITCH prints Unique-IDs in the canonical lowercase 8-4-4-4-12 form.
    if str(parsed) != value.lower() or len(value) != 36:
        return FieldViolation(field, "must be a UUID in 8-4-4-4-12 form")
    return None


def canonical_uuid(value: str) -> str:
    return value.lower()


def command_uid_violation(value: str) -> FieldViolation | None:
    if value and not _COMMAND_UID.fullmatch(value):
        return FieldViolation("command_uid", "at most 128 characters of [a-zA-Z0-9._-]")
    return None


def cause_violation(value: str) -> FieldViolation | None:
    if not value:
        return None
    if not _CAUSE.fullmatch(value):
        return FieldViolation("cause", "at most 64 characters of [A-Z_]")
    if value not in Q850_CAUSES:
        return FieldViolation("cause", f"{value} is not a Q.850 cause FreeSWITCH knows")
    return None


def page_size(value: int) -> int:
    """The page size a list asked for (0: the default); out of range is refused, never clamped."""
    if not 0 <= value <= MAX_PAGE_SIZE:
        raise InvalidArgument(
            [FieldViolation("page_size", f"between 0 and {MAX_PAGE_SIZE} (0: {DEFAULT_PAGE_SIZE})")]
        )
    return value or DEFAULT_PAGE_SIZE


def check(*violations: FieldViolation | None) -> None:
    """Raise InvalidArgument naming every violated field."""
    found = [v for v in violations if v is not None]
    if found:
        raise InvalidArgument(found)


def operation_id_violation(value: str) -> FieldViolation | None:
    return session_id_violation(value, "operation_id")
