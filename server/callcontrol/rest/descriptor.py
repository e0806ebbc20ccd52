"""The REST surface as the descriptor set declares it.

Envoy's transcoder, the route table and the OpenAPI document are all derived
from the same ``google.api.http`` bindings read here, so a service added to
``proto/`` shows up in all three at once and they cannot drift apart.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2

import callcontrol.v1

# googleapis-common-protos ships no py.typed: its HttpRule is handled as Any.
_annotations: Any = importlib.import_module("google.api.annotations_pb2")

# Files under these prefixes are imports (annotations, well-known types), not our API.
_FOREIGN_PREFIXES = ("google/",)
_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)(?:=([^}]*))?\}")
# FileDescriptorProto / ServiceDescriptorProto / DescriptorProto field numbers
# used in SourceCodeInfo paths.
_FILE_MESSAGE, _FILE_SERVICE, _SERVICE_METHOD, _MESSAGE_FIELD, _MESSAGE_NESTED = 4, 6, 2, 2, 3


class DescriptorError(ValueError):
    """The descriptor set is missing or does not describe a usable REST surface."""


def default_descriptor_path() -> Path:
    """Where scripts/build_proto.py writes the set (inside the generated package)."""
    return Path(callcontrol.v1.__file__).resolve().parent / "api_descriptor.pb"


@dataclass(frozen=True, slots=True)
class HttpBinding:
    """One REST route: an HTTP verb and path template bound to one gRPC method."""

    service: str  # full name, e.g. "callcontrol.v1.SessionCommands"
    method: str  # e.g. "Answer"
    verb: str  # upper case, e.g. "POST"
    template: str  # e.g. "/api/v1/sessions/{session_id}/commands/answer"
    body: str  # "" (no body), "*" (whole request) or one field name
    input_type: str  # full message name without the leading dot
    output_type: str
    server_streaming: bool
    comment: str

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(m.group(1) for m in _VARIABLE.finditer(self.template))

    @property
    def openapi_path(self) -> str:
        """The template with ``{name=pattern}`` reduced to ``{name}``."""
        return _VARIABLE.sub(lambda m: "{" + m.group(1) + "}", self.template)

    @property
    def path_regex(self) -> str:
        """An RE2 (and Python ``re``) pattern matching the paths of this template."""
        out, pos = ["^"], 0
        for m in _VARIABLE.finditer(self.template):
            out.append(re.escape(self.template[pos : m.start()]))
            pattern = m.group(2) or "*"
            out.append(_segment_regex(pattern))
            pos = m.end()
        out.append(re.escape(self.template[pos:]))
        out.append("$")
        return "".join(out)

    @property
    def group(self) -> str:
        """Rate-limit group: the collection the path addresses (``sessions``, ``operations``).

        Session commands live under ``/api/v1/sessions`` and so share the group of
        the other session endpoints, as the spec requires.
        """
        parts = [p for p in self.template.split("/") if p]
        collection = next((p for p in parts[2:] if not p.startswith("{")), None) if len(parts) > 2 else None
        return collection or (parts[0] if parts else "root")

    @property
    def route_name(self) -> str:
        return f"{self.service}.{self.method}"

    @property
    def is_command(self) -> bool:
        """A state-changing call: answered 202, never retried once sent."""
        return self.verb != "GET"


def _segment_regex(pattern: str) -> str:
    parts = []
    for segment in pattern.split("/"):
        if segment == "**":
            parts.append(".+")
        elif segment == "*":
            parts.append("[^/]+")
        else:
            parts.append(re.escape(segment))
    return "/".join(parts)


@dataclass(frozen=True, slots=True)
class ApiDescriptor:
    path: Path
    files: tuple[descriptor_pb2.FileDescriptorProto, ...]
    services: tuple[str, ...]
    bindings: tuple[HttpBinding, ...]

    def messages(self) -> dict[str, tuple[descriptor_pb2.DescriptorProto, str]]:
        """Every message by full name, with its leading comment."""
        found: dict[str, tuple[descriptor_pb2.DescriptorProto, str]] = {}
        for file in self.files:
            comments = _comments(file)
            for index, message in enumerate(file.message_type):
                _collect(found, file.package, message, (_FILE_MESSAGE, index), comments)
        return found

    def field_comments(self) -> dict[tuple[str, str], str]:
        """Leading comment of each field, keyed by (message full name, field name)."""
        result: dict[tuple[str, str], str] = {}
        for file in self.files:
            comments = _comments(file)
            for index, message in enumerate(file.message_type):
                _field_comments(result, file.package, message, (_FILE_MESSAGE, index), comments)
        return result

    def enums(self) -> dict[str, descriptor_pb2.EnumDescriptorProto]:
        found: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        for file in self.files:
            for enum in file.enum_type:
                found[_join(file.package, enum.name)] = enum
            for message in file.message_type:
                _collect_enums(found, _join(file.package, message.name), message)
        return found


def _join(package: str, name: str) -> str:
    return f"{package}.{name}" if package else name


def _collect(
    found: dict[str, tuple[descriptor_pb2.DescriptorProto, str]],
    scope: str,
    message: descriptor_pb2.DescriptorProto,
    path: tuple[int, ...],
    comments: dict[tuple[int, ...], str],
) -> None:
    name = _join(scope, message.name)
    found[name] = (message, comments.get(path, ""))
    for index, nested in enumerate(message.nested_type):
        _collect(found, name, nested, (*path, _MESSAGE_NESTED, index), comments)


def _field_comments(
    result: dict[tuple[str, str], str],
    scope: str,
    message: descriptor_pb2.DescriptorProto,
    path: tuple[int, ...],
    comments: dict[tuple[int, ...], str],
) -> None:
    name = _join(scope, message.name)
    for index, field in enumerate(message.field):
        text = comments.get((*path, _MESSAGE_FIELD, index), "")
        if text:
            result[(name, field.name)] = text
    for index, nested in enumerate(message.nested_type):
        _field_comments(result, name, nested, (*path, _MESSAGE_NESTED, index), comments)


def _collect_enums(
    found: dict[str, descriptor_pb2.EnumDescriptorProto], scope: str, message: descriptor_pb2.DescriptorProto
) -> None:
    for enum in message.enum_type:
        found[_join(scope, enum.name)] = enum
    for nested in message.nested_type:
        _collect_enums(found, _join(scope, nested.name), nested)


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    return {
        tuple(loc.path): " ".join(line.strip() for line in loc.leading_comments.strip().splitlines())
        for loc in file.source_code_info.location
        if loc.leading_comments
    }


def _rules(rule: Any) -> Iterator[tuple[str, str, str]]:
    """(verb, path template, body) of a google.api.HttpRule and its additional bindings."""
    kind = rule.WhichOneof("pattern")
    if kind == "custom":
        yield rule.custom.kind.upper(), rule.custom.path, rule.body
    elif kind is not None:
        yield kind.upper(), getattr(rule, kind), rule.body
    for extra in rule.additional_bindings:
        yield from _rules(extra)


def _own_files(
    files: list[descriptor_pb2.FileDescriptorProto],
) -> Iterator[descriptor_pb2.FileDescriptorProto]:
    return (f for f in files if not f.name.startswith(_FOREIGN_PREFIXES))


def load_api(path: Path | None = None) -> ApiDescriptor:
    """Read the descriptor set and every ``google.api.http`` binding of our services."""
    path = path or default_descriptor_path()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DescriptorError(f"descriptor set {path}: {exc} (run scripts/build_proto.py)") from exc
    files = list(descriptor_pb2.FileDescriptorSet.FromString(data).file)
    services: list[str] = []
    bindings: list[HttpBinding] = []
    for file in _own_files(files):
        comments = _comments(file)
        for s_index, service in enumerate(file.service):
            full = _join(file.package, service.name)
            services.append(full)
            for m_index, method in enumerate(service.method):
                if not method.options.HasExtension(_annotations.http):
                    continue
                rule = method.options.Extensions[_annotations.http]
                for verb, template, body in _rules(rule):
                    bindings.append(
                        HttpBinding(
                            service=full,
                            method=method.name,
                            verb=verb,
                            template=template,
                            body=body,
                            input_type=method.input_type.lstrip("."),
                            output_type=method.output_type.lstrip("."),
                            server_streaming=method.server_streaming,
                            comment=comments.get((_FILE_SERVICE, s_index, _SERVICE_METHOD, m_index), ""),
                        )
                    )
    if not services:
        raise DescriptorError(f"descriptor set {path}: no services outside google/*")
    if len(set(services)) != len(services):
        raise DescriptorError(f"descriptor set {path}: a service is defined twice")
    return ApiDescriptor(path=path, files=tuple(files), services=tuple(services), bindings=tuple(bindings))
