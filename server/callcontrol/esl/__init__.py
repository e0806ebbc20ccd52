"""FreeSWITCH Event Socket: the wire format (`callcontrol.esl.frames`).

Only the I/O-free frame layer is re-exported here, so importing it never pulls
in gevent; the outbound link lives in `callcontrol.esl.link`.
"""

from callcontrol.esl.frames import (
    Command,
    CommandParser,
    Event,
    Frame,
    FrameError,
    FrameParser,
    Headers,
    UnsafeValue,
    encode_api_response,
    encode_auth_request,
    encode_command,
    encode_connect_reply,
    encode_disconnect_notice,
    encode_event_json,
    encode_event_plain,
    encode_event_xml,
    encode_reply,
    encode_sendmsg,
    parse_event_plain,
    url_decode,
    url_encode,
)

__all__ = [
    "Command",
    "CommandParser",
    "Event",
    "Frame",
    "FrameError",
    "FrameParser",
    "Headers",
    "UnsafeValue",
    "encode_api_response",
    "encode_auth_request",
    "encode_command",
    "encode_connect_reply",
    "encode_disconnect_notice",
    "encode_event_json",
    "encode_event_plain",
    "encode_event_xml",
    "encode_reply",
    "encode_sendmsg",
    "parse_event_plain",
    "url_decode",
    "url_encode",
]
