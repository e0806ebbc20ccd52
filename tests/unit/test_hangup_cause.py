"""What the gateway reads from each captured hangup event: cause, q850 and SIP code."""

from __future__ import annotations

import pytest

from callcontrol.config import ConfigError, GatewayConfig, from_mapping
from callcontrol.control import HangupCause
from callcontrol.esl.frames import Event, FrameParser, Headers
from tests.transcripts import load


def _outbound_events(capture: str, name: str) -> list[Event]:
    frames = FrameParser().frames(load(capture).stream("outbound#1", "FS->C"))
    return [f.event for f in frames if f.event is not None and f.event.name == name]


@pytest.mark.parametrize(
    ("capture", "event", "expected"),
    [
        # a SIP caller's BYE: CHANNEL_HANGUP already has the SIP status, not hangup_cause_q850
        ("05-sipp-invite-outbound-socket.txt", "CHANNEL_HANGUP", ("NORMAL_CLEARING", 16, 200)),
        ("05-sipp-invite-outbound-socket.txt", "CHANNEL_HANGUP_COMPLETE", ("NORMAL_CLEARING", 16, 200)),
        ("04f-outbound-sendmsg-hangup.txt", "CHANNEL_HANGUP", ("USER_BUSY", 17, None)),
        ("04f-outbound-sendmsg-hangup.txt", "CHANNEL_HANGUP_COMPLETE", ("USER_BUSY", 17, None)),
        # causes above 127 are 16 in Q.850 terms, on both events
        ("04e-outbound-caller-hangup-before-answer.txt", "CHANNEL_HANGUP", ("ORIGINATOR_CANCEL", 16, None)),
        ("06-freeswitch-shutdown-with-live-session.txt", "CHANNEL_HANGUP", ("SYSTEM_SHUTDOWN", 16, None)),
        (
            "06-freeswitch-shutdown-with-live-session.txt",
            "CHANNEL_HANGUP_COMPLETE",
            ("SYSTEM_SHUTDOWN", 16, None),
        ),
    ],
)
def test_the_cause_of_each_captured_hangup_event(
    capture: str, event: str, expected: tuple[str, int, int | None]
) -> None:
    [captured] = _outbound_events(capture, event)
    cause = HangupCause.of(captured)
    assert cause is not None
    assert (cause.name, cause.q850_code, cause.sip_code) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Hangup-Cause": ""}, None),
        ({"Hangup-Cause": "bad cause\r\nX: y"}, None),  # never passed on
        ({"Hangup-Cause": "UNKNOWN"}, ("UNKNOWN", None, None)),  # a number FreeSWITCH has no name for
        ({"Hangup-Cause": "USER_BUSY", "variable_sip_term_status": "²"}, ("USER_BUSY", 17, None)),
        ({"Hangup-Cause": "USER_BUSY", "variable_hangup_cause_q850": "x"}, ("USER_BUSY", 17, None)),
        ({"Hangup-Cause": "USER_BUSY", "variable_sip_term_status": "486"}, ("USER_BUSY", 17, 486)),
    ],
)
def test_odd_values_never_make_up_a_cause_or_a_code(
    headers: dict[str, str], expected: tuple[str, int | None, int | None] | None
) -> None:
    cause = HangupCause.of(Event(Headers([("Event-Name", "CHANNEL_HANGUP"), *headers.items()])))
    assert (None if cause is None else (cause.name, cause.q850_code, cause.sip_code)) == expected


def test_the_linger_wait_is_a_setting_of_its_own() -> None:
    assert GatewayConfig().esl.linger_wait_ms == 1500
    assert from_mapping({"esl": {"linger_wait_ms": 250}}).esl.linger_wait_ms == 250
    assert from_mapping({"esl": {"linger_wait_ms": 0}}).esl.linger_wait_ms == 0  # exit at once
    for bad in (-1, "1000", True):
        with pytest.raises(ConfigError, match=r"esl\.linger_wait_ms"):
            from_mapping({"esl": {"linger_wait_ms": bad}})
