"""The hangup causes FreeSWITCH knows, and how it reads a cause given as text.

Source: FreeSWITCH 1.10.12 (tag v1.10.12, a88d069): the ``CAUSE_CHART`` name table in
``src/switch_channel.c`` and the ``switch_call_cause_t`` values (``SWITCH_CAUSE_*``)
in ``src/include/switch_types.h``. Codes 1-127 are ITU-T Q.850 cause values; the
others (0, 142, 487, 7xx, 8xx) are FreeSWITCH's own.

How FreeSWITCH reads a cause (``switch_channel_str2cause``; confirmed by the captured
``uuid_kill``/``sendmsg hangup`` transcripts): names match without regard to case; text
that starts with a digit is read as a number (``atoi``); anything else, and an empty
string, becomes NORMAL_CLEARING. A number with no name is reported as ``UNKNOWN``
(``switch_channel_cause2str``). ``hangup_cause_q850`` is the code itself up to 127 and
16 (NORMAL_CLEARING) above (``switch_channel_cause_q850``).

The gateway uses this table to refuse causes FreeSWITCH would silently rewrite;
the simulator uses it to behave like FreeSWITCH.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = ["NORMAL_CLEARING", "Q850_CAUSES", "UNKNOWN_CAUSE", "cause_name", "q850_code", "resolve_cause"]

NORMAL_CLEARING: Final = "NORMAL_CLEARING"
UNKNOWN_CAUSE: Final = "UNKNOWN"

#: Cause name → code, in CAUSE_CHART order.
Q850_CAUSES: Final[Mapping[str, int]] = MappingProxyType(
    {
        "NONE": 0,
        "UNALLOCATED_NUMBER": 1,
        "NO_ROUTE_TRANSIT_NET": 2,
        "NO_ROUTE_DESTINATION": 3,
        "CHANNEL_UNACCEPTABLE": 6,
        "CALL_AWARDED_DELIVERED": 7,
        "NORMAL_CLEARING": 16,
        "USER_BUSY": 17,
        "NO_USER_RESPONSE": 18,
        "NO_ANSWER": 19,
        "SUBSCRIBER_ABSENT": 20,
        "CALL_REJECTED": 21,
        "NUMBER_CHANGED": 22,
        "REDIRECTION_TO_NEW_DESTINATION": 23,
        "EXCHANGE_ROUTING_ERROR": 25,
        "DESTINATION_OUT_OF_ORDER": 27,
        "INVALID_NUMBER_FORMAT": 28,
        "FACILITY_REJECTED": 29,
        "RESPONSE_TO_STATUS_ENQUIRY": 30,
        "NORMAL_UNSPECIFIED": 31,
        "NORMAL_CIRCUIT_CONGESTION": 34,
        "NETWORK_OUT_OF_ORDER": 38,
        "NORMAL_TEMPORARY_FAILURE": 41,
        "SWITCH_CONGESTION": 42,
        "ACCESS_INFO_DISCARDED": 43,
        "REQUESTED_CHAN_UNAVAIL": 44,
        "PRE_EMPTED": 45,
        "FACILITY_NOT_SUBSCRIBED": 50,
        "OUTGOING_CALL_BARRED": 52,
        "INCOMING_CALL_BARRED": 54,
        "BEARERCAPABILITY_NOTAUTH": 57,
        "BEARERCAPABILITY_NOTAVAIL": 58,
        "SERVICE_UNAVAILABLE": 63,
        "BEARERCAPABILITY_NOTIMPL": 65,
        "CHAN_NOT_IMPLEMENTED": 66,
        "FACILITY_NOT_IMPLEMENTED": 69,
        "SERVICE_NOT_IMPLEMENTED": 79,
        "INVALID_CALL_REFERENCE": 81,
        "INCOMPATIBLE_DESTINATION": 88,
        "INVALID_MSG_UNSPECIFIED": 95,
        "MANDATORY_IE_MISSING": 96,
        "MESSAGE_TYPE_NONEXIST": 97,
        "WRONG_MESSAGE": 98,
        "IE_NONEXIST": 99,
        "INVALID_IE_CONTENTS": 100,
        "WRONG_CALL_STATE": 101,
        "RECOVERY_ON_TIMER_EXPIRE": 102,
        "MANDATORY_IE_LENGTH_ERROR": 103,
        "PROTOCOL_ERROR": 111,
        "INTERWORKING": 127,
        "SUCCESS": 142,
        "ORIGINATOR_CANCEL": 487,
        "CRASH": 700,
        "SYSTEM_SHUTDOWN": 701,
        "LOSE_RACE": 702,
        "MANAGER_REQUEST": 703,
        "BLIND_TRANSFER": 800,
        "ATTENDED_TRANSFER": 801,
        "ALLOTTED_TIMEOUT": 802,
        "USER_CHALLENGE": 803,
        "MEDIA_TIMEOUT": 804,
        "PICKED_OFF": 805,
        "USER_NOT_REGISTERED": 806,
        "PROGRESS_TIMEOUT": 807,
        "INVALID_GATEWAY": 808,
        "GATEWAY_DOWN": 809,
        "INVALID_URL": 810,
        "INVALID_PROFILE": 811,
        "NO_PICKUP": 812,
        "SRTP_READ_ERROR": 813,
        "BOWOUT": 814,
        "BUSY_EVERYWHERE": 815,
        "DECLINE": 816,
        "DOES_NOT_EXIST_ANYWHERE": 817,
        "NOT_ACCEPTABLE": 818,
        "UNWANTED": 819,
        "NO_IDENTITY": 820,
        "BAD_IDENTITY_INFO": 821,
        "UNSUPPORTED_CERTIFICATE": 822,
        "INVALID_IDENTITY": 823,
        "STALE_DATE": 824,
        "REJECT_ALL": 825,
    }
)

_NAMES_BY_CODE: Final[Mapping[int, str]] = MappingProxyType(
    {code: name for name, code in Q850_CAUSES.items()}
)
_BY_UPPER_NAME: Final[Mapping[str, int]] = MappingProxyType(
    {name.upper(): code for name, code in Q850_CAUSES.items()}
)
_INT_MAX: Final = 2**31 - 1


def _atoi(text: str) -> int:
    digits = ""
    for char in text:
        if not "0" <= char <= "9":
            break
        digits += char
    return min(int(digits), _INT_MAX)


def resolve_cause(text: str | None) -> int:
    """The cause code FreeSWITCH uses for ``text`` (``switch_channel_str2cause``)."""
    if not text:
        return Q850_CAUSES[NORMAL_CLEARING]
    if "0" <= text[0] <= "9":
        return _atoi(text)
    return _BY_UPPER_NAME.get(text.upper(), Q850_CAUSES[NORMAL_CLEARING])


def cause_name(code: int) -> str:
    """The name FreeSWITCH reports for a code (``Hangup-Cause``), ``UNKNOWN`` if it has none."""
    return _NAMES_BY_CODE.get(code, UNKNOWN_CAUSE)


def q850_code(code: int) -> int:
    """``hangup_cause_q850``: the code itself up to 127 (INTERWORKING), else NORMAL_CLEARING (16)."""
    return code if code <= Q850_CAUSES["INTERWORKING"] else Q850_CAUSES[NORMAL_CLEARING]
