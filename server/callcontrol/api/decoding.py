"""Requests that protobuf cannot parse become a clean INVALID_ARGUMENT.

grpcio answers a request its deserializer rejects with INTERNAL, the exception's
text and a logged traceback. The commonest cause is a ``string`` field holding
bytes that are not UTF-8 (REST: a percent-escape such as ``%FF`` in the path or
query; the transcoder copies the bytes as they are). The interceptor installs
``lenient`` so such a request reaches the handler as ``Undecodable`` and is
refused naming the field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor, empty_pb2
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet

from callcontrol.errors import FieldViolation, InvalidArgument

_LENGTH_DELIMITED = 2


@dataclass(frozen=True, slots=True)
class Undecodable:
    violation: FieldViolation

    def error(self) -> InvalidArgument:
        return InvalidArgument([self.violation])


def _violation(raw: bytes, message_type: Any) -> FieldViolation:
    """Which top-level text field of ``message_type`` (a Descriptor) is not UTF-8."""
    # Parsed as Empty, every field is an unknown one: bytes, no UTF-8 check.
    holder = empty_pb2.Empty()
    try:
        holder.ParseFromString(raw)
    except DecodeError:
        return FieldViolation("request", "not a well-formed protobuf message")
    fields = UnknownFieldSet(holder)
    for item in (fields[i] for i in range(len(fields))):
        field = message_type.fields_by_number.get(item.field_number)
        if field is None or field.type != descriptor.FieldDescriptor.TYPE_STRING:
            continue
        if item.wire_type != _LENGTH_DELIMITED:
            continue
        try:
            bytes(item.data).decode("utf-8")
        except UnicodeDecodeError:
            return FieldViolation(field.name, "not valid UTF-8")
    return FieldViolation("request", "not valid (a text field holds bytes that are not UTF-8?)")


def lenient(
    deserializer: Callable[[bytes], Any] | None,
) -> Callable[[bytes], Any] | None:
    """Wrap a grpc request deserializer so a parse failure yields ``Undecodable``."""
    if deserializer is None:
        return None

    def parse(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except DecodeError:
            message_cls = getattr(deserializer, "__self__", None)
            if isinstance(message_cls, type) and issubclass(message_cls, Message):
                return Undecodable(_violation(raw, message_cls.DESCRIPTOR))
            return Undecodable(FieldViolation("request", "not a well-formed protobuf message"))

    return parse
