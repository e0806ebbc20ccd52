"""The webhook event catalogue: how each lifecycle event becomes a JSON body.

Every body has the same envelope, so a receiver can route and deduplicate
before it looks at the type::

    {"id": "<event id, also the webhook-id header>",
     "type": "<event type>",
     "occurred_at": "<RFC 3339 UTC, milliseconds>",
     "app_id": "<owning application>",
     "session_id": "<the call's FreeSWITCH Unique-ID>",
     "data": {...}}

Types and their ``data``:

``call.initiated``
    ``caller_number``, ``destination_number``, ``direction`` ("inbound" or
    "outbound"): FreeSWITCH handed the call to the gateway.
``call.answered``
    no fields: FreeSWITCH confirmed the answer; once per call.
``call.hangup``
    ``cause`` (Q.850 name), ``q850_code`` and ``sip_code`` (numbers, null
    when FreeSWITCH did not give them), ``reason`` (null when ``cause`` is
    FreeSWITCH's; else ``cause`` is "UNKNOWN" and ``reason`` is
    "connection_lost" or "cause_not_given"): the call ended.
``command.result``
    ``operation_id``, ``command`` ("answer", "hangup", "disconnect"),
    ``command_uid``, ``status`` ("succeeded", "failed", "timed_out"),
    ``reason`` and ``message`` (null when the command succeeded).

The body is encoded once, when the event is stored, and the same bytes are
signed and sent on every attempt, so retries are byte-identical.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from callcontrol.events import CallAnswered, CallHangup, CallInitiated, CommandResult, LifecycleEvent

JsonObject = dict[str, Any]


def rfc3339(moment: datetime) -> str:
    """UTC with a ``Z`` suffix and milliseconds, the form most JSON parsers accept."""
    if moment.tzinfo is None:
        raise ValueError("event times must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def call_initiated_data(event: CallInitiated) -> JsonObject:
    return {
        "caller_number": event.caller_number,
        "destination_number": event.destination_number,
        "direction": event.direction,
    }


def call_answered_data(event: CallAnswered) -> JsonObject:
    return {}


def call_hangup_data(event: CallHangup) -> JsonObject:
    return {
        "cause": event.cause,
        "q850_code": event.q850_code,
        "sip_code": event.sip_code,
        "reason": event.reason or None,
    }


def command_result_data(event: CommandResult) -> JsonObject:
    return {
        "operation_id": event.operation_id,
        "command": event.command,
        "command_uid": event.command_uid,
        "status": event.status,
        "reason": event.reason or None,
        "message": event.message or None,
    }


def event_data(event: LifecycleEvent) -> JsonObject:
    match event:
        case CallInitiated():
            return call_initiated_data(event)
        case CallAnswered():
            return call_answered_data(event)
        case CallHangup():
            return call_hangup_data(event)
        case CommandResult():
            return command_result_data(event)


def event_body(event: LifecycleEvent) -> JsonObject:
    """The envelope with the event's ``data``."""
    return {
        "id": event.event_id,
        "type": event.type,
        "occurred_at": rfc3339(event.occurred_at),
        "app_id": event.app_id,
        "session_id": event.session_id,
        "data": event_data(event),
    }


def encode_body(event: LifecycleEvent) -> bytes:
    """Compact UTF-8 JSON: the exact bytes that are signed and sent."""
    return json.dumps(event_body(event), separators=(",", ":"), ensure_ascii=False).encode()
