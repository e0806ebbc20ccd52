"""Hangup causes: the table and FreeSWITCH's reading of cause text, checked against 03-hangup-causes."""

from __future__ import annotations

import pytest

import callcontrol.simulator
from callcontrol.causes import NORMAL_CLEARING, Q850_CAUSES, cause_name, q850_code, resolve_cause
from callcontrol.esl.frames import CommandParser, FrameParser
from tests.transcripts import esl_files, load

needs_transcripts = pytest.mark.skipif(not esl_files(), reason="shared/freeswitch-esl transcripts not found")


def test_the_table_is_freeswitchs_cause_chart() -> None:
    assert len(Q850_CAUSES) == 82  # CAUSE_CHART in switch_channel.c, v1.10.12
    assert len(set(Q850_CAUSES.values())) == len(Q850_CAUSES)
    assert Q850_CAUSES["NORMAL_CLEARING"] == 16
    assert Q850_CAUSES["USER_BUSY"] == 17
    assert Q850_CAUSES["DESTINATION_OUT_OF_ORDER"] == 27
    assert Q850_CAUSES["INTERWORKING"] == 127
    assert Q850_CAUSES["ORIGINATOR_CANCEL"] == 487
    assert Q850_CAUSES["SYSTEM_SHUTDOWN"] == 701
    assert Q850_CAUSES["REJECT_ALL"] == 825
    assert callcontrol.simulator.Q850_CAUSES is Q850_CAUSES


@pytest.mark.parametrize(
    ("text", "code", "name", "q850"),
    [
        ("USER_BUSY", 17, "USER_BUSY", 17),
        ("user_busy", 17, "USER_BUSY", 17),
        ("NOT_A_CAUSE", 16, "NORMAL_CLEARING", 16),
        ("", 16, "NORMAL_CLEARING", 16),
        (None, 16, "NORMAL_CLEARING", 16),
        ("17", 17, "USER_BUSY", 17),
        ("17abc", 17, "USER_BUSY", 17),
        ("999", 999, "UNKNOWN", 16),
        ("487", 487, "ORIGINATOR_CANCEL", 16),
        (" USER_BUSY", 16, "NORMAL_CLEARING", 16),
    ],
)
def test_cause_text_is_read_like_switch_channel_str2cause(
    text: str | None, code: int, name: str, q850: int
) -> None:
    assert resolve_cause(text) == code
    assert cause_name(code) == name
    assert q850_code(code) == q850


@needs_transcripts
def test_every_hangup_in_the_capture_matches_our_reading_of_its_cause() -> None:
    transcript = load("03-hangup-causes.txt")
    asked: dict[str, str | None] = {}
    for command in CommandParser().commands(transcript.stream("inbound", "C->FS")):
        words = command.line.split()
        if words[:2] == ["api", "uuid_kill"] and len(words) >= 3:
            asked.setdefault(words[2], words[3] if len(words) > 3 else None)
        elif command.verb == "sendmsg" and command.headers.get("call-command") == "hangup":
            asked.setdefault(command.argument, command.headers.get("hangup-cause"))
    outcome: dict[str, tuple[str, str]] = {}
    for frame in FrameParser().frames(transcript.stream("inbound", "FS->C")):
        event = frame.event
        if event is not None and event.name == "CHANNEL_HANGUP_COMPLETE" and event.unique_id in asked:
            outcome[event.unique_id or ""] = (
                event.get("variable_hangup_cause") or "",
                event.get("variable_hangup_cause_q850") or "",
            )
    assert len(outcome) == len(asked) >= 10
    for uuid, text in asked.items():
        code = resolve_cause(text)
        assert outcome[uuid] == (cause_name(code), str(q850_code(code))), (uuid, text)
    assert NORMAL_CLEARING in {name for name, _ in outcome.values()}
