"""The event catalogue: every event's JSON body, and the README examples that document it."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from callcontrol.events import (
    HANGUP_REASONS,
    CallAnswered,
    CallHangup,
    CallInitiated,
    CommandResult,
    LifecycleEvent,
)
from callcontrol.webhooks import encode_body, event_body
from callcontrol.webhooks.catalogue import rfc3339

from .conftest import answered, command_result, hangup, initiated, session_id

README = Path(__file__).resolve().parents[2] / "README.md"
ENVELOPE = ["id", "type", "occurred_at", "app_id", "session_id", "data"]


def test_call_initiated_carries_numbers_and_direction() -> None:
    s = session_id()
    event = initiated("app", s, caller_number="+1555", destination_number="1000", direction="outbound")
    body = event_body(event)
    assert list(body) == ENVELOPE
    assert body["id"] == event.event_id
    assert body["type"] == "call.initiated"
    assert body["app_id"] == "app"
    assert body["session_id"] == s
    assert body["data"] == {"caller_number": "+1555", "destination_number": "1000", "direction": "outbound"}


def test_call_answered_has_empty_data() -> None:
    assert event_body(answered("app", session_id()))["data"] == {}


def test_call_hangup_gives_cause_and_codes_null_when_absent() -> None:
    with_codes = event_body(hangup("app", session_id(), cause="USER_BUSY", q850_code=17, sip_code=486))
    assert with_codes["data"] == {"cause": "USER_BUSY", "q850_code": 17, "sip_code": 486, "reason": None}
    without = event_body(hangup("app", session_id(), cause="NORMAL_CLEARING"))
    assert without["data"] == {
        "cause": "NORMAL_CLEARING",
        "q850_code": None,
        "sip_code": None,
        "reason": None,
    }


@pytest.mark.parametrize("reason", HANGUP_REASONS)
def test_call_hangup_says_why_when_the_cause_is_unknown(reason: str) -> None:
    lost = event_body(hangup("app", session_id(), cause="UNKNOWN", reason=reason))
    assert lost["data"] == {"cause": "UNKNOWN", "q850_code": None, "sip_code": None, "reason": reason}


def test_readme_documents_every_hangup_reason() -> None:
    section = README.read_text().split("#### `call.hangup`", 1)[1].split("#### ", 1)[0]
    documented = re.findall(r"^\| `([a-z_]+)` \| (?!meaning)", section, flags=re.MULTILINE)
    assert sorted(documented) == sorted(HANGUP_REASONS)


def test_command_result_names_the_operation_and_its_outcome() -> None:
    ok = event_body(
        command_result("app", session_id(), operation_id="op-1", command="hangup", command_uid="u1")
    )
    assert ok["data"] == {
        "operation_id": "op-1",
        "command": "hangup",
        "command_uid": "u1",
        "status": "succeeded",
        "reason": None,
        "message": None,
    }
    timed_out = event_body(
        command_result("app", session_id(), status="timed_out", reason="timeout", message="no confirmation")
    )
    assert timed_out["data"]["status"] == "timed_out"
    assert timed_out["data"]["reason"] == "timeout"
    assert timed_out["data"]["message"] == "no confirmation"


def test_occurred_at_is_rfc3339_utc_with_z() -> None:
    moment = datetime(2026, 3, 14, 10, 26, 53, 120999, tzinfo=timezone(timedelta(hours=1)))
    assert rfc3339(moment) == "2026-03-14T09:26:53.120Z"
    body = event_body(answered("app", session_id(), occurred_at=moment))
    assert body["occurred_at"] == "2026-03-14T09:26:53.120Z"


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        rfc3339(datetime(2026, 1, 1))


def test_every_event_gets_its_own_id() -> None:
    s = session_id()
    ids = {initiated("a", s).event_id for _ in range(100)}
    assert len(ids) == 100


def test_encoded_body_is_compact_utf8_json_of_the_envelope() -> None:
    event = initiated("app", session_id(), caller_number="Jiří ☎")
    raw = encode_body(event)
    assert b" " not in raw.replace("Jiří ☎".encode(), b"")
    assert "Jiří ☎".encode() in raw
    assert json.loads(raw) == event_body(event)


def _readme_examples() -> list[dict[str, object]]:
    webhooks = README.read_text().split("\n## Webhooks\n", 1)[1]
    blocks = re.findall(r"```json\n(.*?)```", webhooks, flags=re.DOTALL)
    return [json.loads(block) for block in blocks]


def _same_shape(event: LifecycleEvent) -> tuple[list[str], list[str]]:
    body = event_body(event)
    return list(body), sorted(body["data"])


def test_readme_has_one_example_per_event_type_shaped_like_the_catalogue() -> None:
    examples = _readme_examples()
    assert {e["type"] for e in examples} == {
        "call.initiated",
        "call.answered",
        "call.hangup",
        "command.result",
    }
    s = session_id()
    real: dict[str, LifecycleEvent] = {
        "call.initiated": CallInitiated(
            app_id="a", session_id=s, caller_number="1", destination_number="2", direction="inbound"
        ),
        "call.answered": CallAnswered(app_id="a", session_id=s),
        "call.hangup": CallHangup(app_id="a", session_id=s, cause="NORMAL_CLEARING"),
        "command.result": CommandResult(
            app_id="a", session_id=s, operation_id="o", command="answer", command_uid="u", status="succeeded"
        ),
    }
    for example in examples:
        keys, data_keys = _same_shape(real[str(example["type"])])
        assert list(example) == keys
        assert isinstance(example["data"], dict)
        assert sorted(example["data"]) == data_keys
        assert rfc3339(datetime.fromisoformat(str(example["occurred_at"]))) == example["occurred_at"]
