"""JSON Schema of protobuf messages as the transcoder prints them.

``preserve_proto_field_names`` (snake_case), ``always_print_primitive_fields`` (so
a response's scalar and repeated fields are always there and can be required),
64-bit integers as strings, well-known types in their JSON forms. The spec's
field limits, which protobuf cannot say, are added by field name.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf import descriptor_pb2

from callcontrol.causes import Q850_CAUSES
from callcontrol.rest.descriptor import ApiDescriptor
from callcontrol.rest.envoy_routes import ENVELOPE_TYPE

_F = descriptor_pb2.FieldDescriptorProto
_INT32 = {_F.TYPE_INT32, _F.TYPE_SINT32, _F.TYPE_SFIXED32}
_UINT32 = {_F.TYPE_UINT32, _F.TYPE_FIXED32}
_INT64 = {_F.TYPE_INT64, _F.TYPE_SINT64, _F.TYPE_SFIXED64, _F.TYPE_UINT64, _F.TYPE_FIXED64}

# The spec's limits, by field name, wherever the field appears.
FIELD_RULES: dict[str, dict[str, Any]] = {
    "session_id": {"format": "uuid"},
    "operation_id": {"format": "uuid"},
    # "" is the same as omitted (proto3): a fresh UUID, NORMAL_CLEARING.
    "command_uid": {"maxLength": 128, "pattern": "^[a-zA-Z0-9._-]*$"},
    # Only the causes FreeSWITCH knows are accepted (it would rewrite any other).
    "cause": {"enum": ["", *sorted(Q850_CAUSES)], "examples": ["USER_BUSY"]},
    "page_size": {"minimum": 0, "maximum": 1000},
}
# Values fixed by the contract for one message's field.
MESSAGE_FIELD_RULES: dict[tuple[str, str], dict[str, Any]] = {
    (ENVELOPE_TYPE, "status"): {"enum": ["in_progress"]},
    # "" lists failed deliveries, as omitting it does.
    ("callcontrol.v1.ListDeliveriesRequest", "status"): {"enum": ["", "failed", "pending", "delivered"]},
    ("callcontrol.v1.Delivery", "status"): {"enum": ["pending", "delivered", "failed"]},
}

WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
    "google.protobuf.StringValue": {"type": ["string", "null"]},
    "google.protobuf.BytesValue": {"type": ["string", "null"], "contentEncoding": "base64"},
    "google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    "google.protobuf.Int32Value": {"type": ["integer", "null"], "format": "int32"},
    "google.protobuf.UInt32Value": {"type": ["integer", "null"], "minimum": 0},
    "google.protobuf.Int64Value": {"type": ["string", "null"], "format": "int64"},
    "google.protobuf.UInt64Value": {"type": ["string", "null"], "format": "uint64"},
    "google.protobuf.FloatValue": {"type": ["number", "null"], "format": "float"},
    "google.protobuf.DoubleValue": {"type": ["number", "null"], "format": "double"},
}


def ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


class Schemas:
    """Collects component schemas for the messages the paths reach."""

    def __init__(self, api: ApiDescriptor, response_types: set[str]) -> None:
        self._messages = api.messages()
        self._enums = api.enums()
        self._comments = api.field_comments()
        self._response_types = response_types
        self.components: dict[str, Any] = {}
        self._names: dict[str, str] = {}

    def descriptor(self, full_name: str) -> descriptor_pb2.DescriptorProto:
        return self._messages[full_name][0]

    def name(self, full_name: str) -> str:
        if full_name not in self._names:
            short = full_name.rsplit(".", 1)[-1]
            taken = set(self._names.values())
            self._names[full_name] = short if short not in taken else full_name.replace(".", "_")
        return self._names[full_name]

    def message(
        self, full_name: str, *, without: Iterable[str] = (), name: str | None = None, closed: bool = False
    ) -> dict[str, Any]:
        """A $ref to the message's schema, adding it (and what it reaches) on first use.

        ``closed``: a request body, whose unknown top-level keys are refused (rest.lua).
        """
        if full_name in WELL_KNOWN:
            return dict(WELL_KNOWN[full_name])
        skip = set(without)
        key = name or self.name(full_name)
        if key not in self.components:
            self.components[key] = {}  # placeholder: recursion stops here
            self.components[key] = self._build(full_name, skip)
            if closed:
                self.components[key]["additionalProperties"] = False
        return ref("schemas", key)

    def _build(self, full_name: str, skip: set[str]) -> dict[str, Any]:
        message, comment = self._messages[full_name]
        properties: dict[str, Any] = {}
        required: list[str] = []
        for field in message.field:
            if field.name in skip:
                continue
            properties[field.name] = self.field(full_name, field)
            always_printed = field.type != _F.TYPE_MESSAGE or self._is_map(field) or _repeated(field)
            if full_name in self._response_types and always_printed and not field.proto3_optional:
                required.append(field.name)
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        if comment:
            schema["description"] = comment
        return schema

    def _is_map(self, field: descriptor_pb2.FieldDescriptorProto) -> bool:
        if field.type != _F.TYPE_MESSAGE or not _repeated(field):
            return False
        entry = self._messages.get(field.type_name.lstrip("."))
        return entry is not None and entry[0].options.map_entry

    def field(self, owner: str, field: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        if self._is_map(field):
            entry = self._messages[field.type_name.lstrip(".")][0]
            value = next(f for f in entry.field if f.name == "value")
            schema: dict[str, Any] = {"type": "object", "additionalProperties": self._single(value)}
        elif _repeated(field):
            schema = {"type": "array", "items": self._single(field)}
        else:
            schema = self._single(field)
            if field.type == _F.TYPE_STRING:
                schema.update(FIELD_RULES.get(field.name, {}))
            if field.name == "page_size" and field.type in _INT32:
                schema.update(FIELD_RULES["page_size"])
            schema.update(MESSAGE_FIELD_RULES.get((owner, field.name), {}))
        comment = self._comments.get((owner, field.name))
        if comment:
            if "$ref" in schema:  # 3.1 allows siblings of $ref
                schema = {**schema, "description": comment}
            else:
                schema["description"] = comment
        return schema

    def _single(self, field: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        t = field.type
        if t == _F.TYPE_MESSAGE:
            return self.message(field.type_name.lstrip("."))
        if t == _F.TYPE_ENUM:
            enum = self._enums[field.type_name.lstrip(".")]
            return {"type": "string", "enum": [v.name for v in enum.value]}
        if t == _F.TYPE_STRING:
            return {"type": "string"}
        if t == _F.TYPE_BOOL:
            return {"type": "boolean"}
        if t == _F.TYPE_BYTES:
            return {"type": "string", "contentEncoding": "base64"}
        if t in (_F.TYPE_DOUBLE, _F.TYPE_FLOAT):
            return {"type": "number", "format": "double" if t == _F.TYPE_DOUBLE else "float"}
        if t in _INT32:
            return {"type": "integer", "format": "int32"}
        if t in _UINT32:
            return {"type": "integer", "minimum": 0, "maximum": 2**32 - 1}
        if t in _INT64:
            # The transcoder prints 64-bit integers as JSON strings.
            return {
                "type": "string",
                "format": "uint64" if t in (_F.TYPE_UINT64, _F.TYPE_FIXED64) else "int64",
            }
        raise ValueError(f"unsupported field type {t} of {field.name}")


def reachable(api: ApiDescriptor, roots: set[str]) -> set[str]:
    """Messages printed in responses: always_print_primitive_fields makes their
    scalar and repeated fields always present, so the schema can require them."""
    messages = api.messages()
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name not in messages:
            continue
        seen.add(name)
        todo.extend(f.type_name.lstrip(".") for f in messages[name][0].field if f.type == _F.TYPE_MESSAGE)
    return seen


def _repeated(field: descriptor_pb2.FieldDescriptorProto) -> bool:
    return field.label == _F.LABEL_REPEATED
