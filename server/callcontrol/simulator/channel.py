"""One simulated FreeSWITCH channel and the event headers FreeSWITCH would print for it.

The header sets, their order and the ``Event-Calling-*`` sites are modeled on the
frames captured from FreeSWITCH 1.10.12 (``shared/freeswitch-esl``: a SIP call from
sipp handed to ``socket ... async full``). They are embedded here as data so the
simulator never reads the transcripts at run time.

Order of an event's headers, as ``switch_event_serialize`` prints them:
the core block (``Event-Name`` … ``Event-Sequence``), event-specific leading
headers (``Hangup-Cause`` on ``CHANNEL_HANGUP_COMPLETE``), the channel block
(``Channel-State`` … codecs), the caller profile (``Caller-*``), the channel
variables (``variable_*``; not on ``CHANNEL_STATE``), then the application headers.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from types import MappingProxyType
from typing import Final

Pairs = list[tuple[str, str]]

#: Where FreeSWITCH 1.10.12 fires each event (Event-Calling-File/-Function/-Line-Number).
CALLING_SITES: Final[Mapping[str, tuple[str, str, int]]] = MappingProxyType(
    {
        "CHANNEL_DATA": ("mod_event_socket.c", "parse_command", 2021),
        "CHANNEL_PARK": ("switch_ivr.c", "switch_ivr_park", 1002),
        "CHANNEL_UNPARK": ("switch_ivr.c", "switch_ivr_park", 1213),
        "CHANNEL_EXECUTE": ("switch_core_session.c", "switch_core_session_exec", 2944),
        "CHANNEL_EXECUTE_COMPLETE": ("switch_core_session.c", "switch_core_session_exec", 2967),
        "CHANNEL_ANSWER": ("switch_channel.c", "switch_channel_perform_mark_answered", 3846),
        "CHANNEL_HANGUP": ("switch_channel.c", "switch_channel_perform_hangup", 3445),
        "CHANNEL_STATE": ("switch_channel.c", "switch_channel_perform_set_running_state", 2408),
        "CHANNEL_HANGUP_COMPLETE": (
            "switch_core_state_machine.c",
            "switch_core_session_reporting_state",
            943,
        ),
    }
)

# The SIP side of the simulated call (documentation addresses, RFC 5737).
REMOTE_SIP_IP: Final = "192.0.2.10"
LOCAL_SIP_IP: Final = "192.0.2.2"
SIP_PORT: Final = "5060"
CODEC: Final = ("PCMU", "8000", "64000")


@dataclass(frozen=True, slots=True)
class SwitchIdentity:
    """What every event says about the switch that fired it."""

    core_uuid: str
    hostname: str = "freeswitch-sim"
    ipv4: str = LOCAL_SIP_IP
    ipv6: str = "::1"


def _micros(now: float) -> str:
    return str(int(now * 1_000_000))


def _local_stamp(now: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))


@dataclass(slots=True)
class Channel:
    """The mutable state of one channel, as FreeSWITCH would report it."""

    uuid: str
    name: str
    caller_number: str
    caller_name: str
    destination_number: str
    created: float
    answered: float = 0.0
    hungup: float = 0.0
    running_state: str = "CS_EXECUTE"
    state_number: int = 4
    call_state: str = "RINGING"
    answer_state: str = "ringing"
    hangup_cause: str | None = None
    variables: dict[str, str] = field(default_factory=dict)

    def set_variable(self, name: str, value: str) -> None:
        """Like switch_channel_set_variable: a changed variable moves to the end."""
        self.variables.pop(name, None)
        self.variables[name] = value

    def unset_variable(self, name: str) -> None:
        self.variables.pop(name, None)

    def _caller_profile(self, prefix: str) -> Pairs:
        def micros(value: float) -> str:
            return _micros(value) if value else "0"

        fields = [
            ("Direction", "inbound"),
            ("Logical-Direction", "inbound"),
            ("Username", self.caller_number),
            ("Dialplan", "XML"),
            ("Caller-ID-Name", self.caller_name),
            ("Caller-ID-Number", self.caller_number),
            ("Orig-Caller-ID-Name", self.caller_name),
            ("Orig-Caller-ID-Number", self.caller_number),
            ("Network-Addr", REMOTE_SIP_IP),
            ("ANI", self.caller_number),
            ("Destination-Number", self.destination_number),
            ("Unique-ID", self.uuid),
            ("Source", "mod_sofia"),
            ("Context", "default"),
            ("Channel-Name", self.name),
            ("Profile-Index", "1"),
            ("Profile-Created-Time", micros(self.created)),
            ("Channel-Created-Time", micros(self.created)),
            ("Channel-Answered-Time", micros(self.answered)),
            ("Channel-Progress-Time", "0"),
            ("Channel-Progress-Media-Time", "0"),
            ("Channel-Hangup-Time", micros(self.hungup)),
            ("Channel-Transfer-Time", "0"),
            ("Channel-Resurrect-Time", "0"),
            ("Channel-Bridged-Time", "0"),
            ("Channel-Last-Hold", "0"),
            ("Channel-Hold-Accum", "0"),
            ("Screen-Bit", "true"),
            ("Privacy-Hide-Name", "false"),
            ("Privacy-Hide-Number", "false"),
        ]
        return [(f"{prefix}-{name}", value) for name, value in fields]

    def _basic(self) -> Pairs:
        pairs = [
            ("Channel-State", self.running_state),
            ("Channel-Call-State", self.call_state),
            ("Channel-State-Number", str(self.state_number)),
            ("Channel-Name", self.name),
            ("Unique-ID", self.uuid),
            ("Call-Direction", "inbound"),
            ("Presence-Call-Direction", "inbound"),
            ("Channel-HIT-Dialplan", "true"),
            ("Channel-Call-UUID", self.uuid),
            ("Answer-State", self.answer_state),
        ]
        if self.hangup_cause is not None:
            pairs.append(("Hangup-Cause", self.hangup_cause))
        codec, rate, bit_rate = CODEC
        for direction in ("Read", "Write"):
            pairs += [
                (f"Channel-{direction}-Codec-Name", codec),
                (f"Channel-{direction}-Codec-Rate", rate),
                (f"Channel-{direction}-Codec-Bit-Rate", bit_rate),
            ]
        return pairs

    def _variables(self) -> Pairs:
        return [(f"variable_{name}", value) for name, value in self.variables.items()]

    def event_headers(
        self,
        switch: SwitchIdentity,
        sequence: int,
        name: str,
        *,
        now: float,
        variables: bool = True,
        leading: Sequence[tuple[str, str]] = (),
        extra: Sequence[tuple[str, str]] = (),
    ) -> Pairs:
        """The inner headers of one ``text/event-plain`` event about this channel."""
        pairs = core_headers(switch, sequence, name, now=now)
        pairs += leading
        pairs += self._basic()
        pairs += self._caller_profile("Caller")
        if variables:
            pairs += self._variables()
        pairs += extra
        return pairs

    def channel_data(self, switch: SwitchIdentity, sequence: int, *, now: float) -> Pairs:
        """The ``CHANNEL_DATA`` block of the outbound ``connect`` reply."""
        pairs = core_headers(switch, sequence, "CHANNEL_DATA", now=now)
        pairs += self._caller_profile("Channel")
        pairs += self._basic()
        pairs += self._caller_profile("Caller")
        pairs += self._variables()
        return pairs


def core_headers(switch: SwitchIdentity, sequence: int, name: str, *, now: float) -> Pairs:
    """The block every event starts with."""
    calling_file, function, line = CALLING_SITES.get(
        name, ("switch_event.c", "switch_event_fire_detailed", 0)
    )
    return [
        ("Event-Name", name),
        ("Core-UUID", switch.core_uuid),
        ("FreeSWITCH-Hostname", switch.hostname),
        ("FreeSWITCH-Switchname", switch.hostname),
        ("FreeSWITCH-IPv4", switch.ipv4),
        ("FreeSWITCH-IPv6", switch.ipv6),
        ("Event-Date-Local", _local_stamp(now)),
        ("Event-Date-GMT", formatdate(now, usegmt=True)),
        ("Event-Date-Timestamp", _micros(now)),
        ("Event-Calling-File", calling_file),
        ("Event-Calling-Function", function),
        ("Event-Calling-Line-Number", str(line)),
        ("Event-Sequence", str(sequence)),
    ]


def sip_channel(
    *,
    uuid: str,
    session_id: int,
    caller_number: str,
    caller_name: str,
    destination_number: str,
    app_id: str | None,
    socket_address: tuple[str, int],
    now: float,
) -> Channel:
    """A ringing inbound SIP channel whose dialplan just ran ``set`` and ``socket <addr> async full``."""
    name = f"sofia/internal/{caller_number}@{REMOTE_SIP_IP}:{SIP_PORT}"
    tag = uuid.replace("-", "")[:13]
    from_uri = f"{caller_number}@{REMOTE_SIP_IP}:{SIP_PORT}"
    to_uri = f"{destination_number}@{LOCAL_SIP_IP}:{SIP_PORT}"
    socket_host, socket_port = socket_address
    display = f'"{caller_name}"' if " " in caller_name else caller_name
    variables: Iterable[tuple[str, str | None]] = (
        ("direction", "inbound"),
        ("uuid", uuid),
        ("session_id", str(session_id)),
        ("sip_from_user", caller_number),
        ("sip_from_port", SIP_PORT),
        ("sip_from_uri", from_uri),
        ("sip_from_host", REMOTE_SIP_IP),
        ("video_media_flow", "disabled"),
        ("text_media_flow", "disabled"),
        ("channel_name", name),
        ("sip_call_id", f"{tag}@{REMOTE_SIP_IP}"),
        ("sip_local_network_addr", LOCAL_SIP_IP),
        ("sip_network_ip", REMOTE_SIP_IP),
        ("sip_network_port", SIP_PORT),
        ("sip_invite_stamp", _micros(now)),
        ("sip_received_ip", REMOTE_SIP_IP),
        ("sip_received_port", SIP_PORT),
        ("sip_via_protocol", "udp"),
        ("sip_from_user_stripped", caller_number),
        ("sip_from_tag", tag),
        ("sofia_profile_name", "internal"),
        ("sofia_profile_url", f"sip:mod_sofia@{LOCAL_SIP_IP}:{SIP_PORT}"),
        ("recovery_profile_name", "internal"),
        ("sip_full_via", f"SIP/2.0/UDP {REMOTE_SIP_IP}:{SIP_PORT};branch=z9hG4bK-{tag}"),
        ("sip_from_display", caller_name),
        ("sip_full_from", f"{display} <sip:{from_uri}>;tag={tag}"),
        ("sip_to_display", destination_number),
        ("sip_full_to", f"{destination_number} <sip:{to_uri}>"),
        ("sip_req_user", destination_number),
        ("sip_req_port", SIP_PORT),
        ("sip_req_uri", to_uri),
        ("sip_req_host", LOCAL_SIP_IP),
        ("sip_to_user", destination_number),
        ("sip_to_port", SIP_PORT),
        ("sip_to_uri", to_uri),
        ("sip_to_host", LOCAL_SIP_IP),
        ("sip_contact_user", caller_number),
        ("sip_contact_port", SIP_PORT),
        ("sip_contact_uri", from_uri),
        ("sip_contact_host", REMOTE_SIP_IP),
        ("sip_via_host", REMOTE_SIP_IP),
        ("sip_via_port", SIP_PORT),
        ("max_forwards", "70"),
        ("read_codec", CODEC[0]),
        ("original_read_codec", CODEC[0]),
        ("read_rate", CODEC[1]),
        ("original_read_rate", CODEC[1]),
        ("write_codec", CODEC[0]),
        ("write_rate", CODEC[1]),
        ("dtmf_type", "rfc2833"),
        ("endpoint_disposition", "RECEIVED"),
        ("call_uuid", uuid),
        ("call_control_app_id", app_id),
        ("current_application_data", f"{socket_host}:{socket_port} async full"),
        ("current_application", "socket"),
        ("socket_host", socket_host),
    )
    return Channel(
        uuid=uuid,
        name=name,
        caller_number=caller_number,
        caller_name=caller_name,
        destination_number=destination_number,
        created=now,
        variables={k: v for k, v in variables if v is not None},
    )


def hangup_variables(channel: Channel, *, cause: str, q850: int, last_app: str) -> Pairs:
    """What FreeSWITCH adds when the channel reaches CS_REPORTING (cause, CDR times)."""
    start, answer, end = channel.created, channel.answered, channel.hungup
    billed = end - answer if answer else 0.0
    pairs = [
        ("hangup_cause", cause),
        ("hangup_cause_q850", str(q850)),
        ("digits_dialed", "none"),
        ("start_stamp", _local_stamp(start)),
        ("profile_start_stamp", _local_stamp(start)),
    ]
    if answer:
        pairs.append(("answer_stamp", _local_stamp(answer)))
    pairs += [
        ("end_stamp", _local_stamp(end)),
        ("start_epoch", str(int(start))),
        ("start_uepoch", _micros(start)),
        ("answer_epoch", str(int(answer))),
        ("answer_uepoch", _micros(answer) if answer else "0"),
        ("end_epoch", str(int(end))),
        ("end_uepoch", _micros(end)),
        ("last_app", last_app),
        ("caller_id", f'"{channel.caller_name}" <{channel.caller_number}>'),
        ("duration", str(int(end - start))),
        ("billsec", str(int(billed))),
        ("mduration", str(int((end - start) * 1000))),
        ("billmsec", str(int(billed * 1000))),
        ("answermsec", str(int((answer - start) * 1000)) if answer else "0"),
    ]
    return pairs
