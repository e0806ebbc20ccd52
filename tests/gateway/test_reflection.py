"""Server reflection answers under v1 (current grpcurl, Postman) and v1alpha, with comments."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

# reflection v1 and v1alpha are the same messages (same field numbers) in two packages,
# so the v1alpha classes encode a v1 request byte for byte.
Request: Any = reflection_pb2.ServerReflectionRequest
Response: Any = reflection_pb2.ServerReflectionResponse


async def _ask(channel: grpc.aio.Channel, version: str, request: Any) -> Any:
    call = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=Request.SerializeToString,
        response_deserializer=Response.FromString,
    )
    stream = call(iter([request]))
    [response] = [r async for r in stream]
    return response


def _files(response: Any) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    protos = [
        descriptor_pb2.FileDescriptorProto.FromString(b)
        for b in response.file_descriptor_response.file_descriptor_proto
    ]
    return {p.name: p for p in protos}


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_reflection_lists_the_services(channel: grpc.aio.Channel, version: str) -> None:
    response = await _ask(channel, version, Request(list_services=""))
    names = {s.name for s in response.list_services_response.service}
    assert {
        "callcontrol.v1.SessionCommands",
        "callcontrol.v1.Operations",
        "callcontrol.v1.Sessions",
        "callcontrol.v1.Deliveries",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_reflection_serves_the_comments(channel: grpc.aio.Channel, version: str) -> None:
    response = await _ask(channel, version, Request(file_containing_symbol="callcontrol.v1.SessionCommands"))
    files = _files(response)
    commands = files["callcontrol/v1/commands.proto"]
    comments = [loc.leading_comments for loc in commands.source_code_info.location]
    assert any("Answer an incoming call" in c for c in comments)
    assert "google/api/annotations.proto" in files  # with its imports, as clients need


async def test_reflection_describes_its_v1_self(channel: grpc.aio.Channel) -> None:
    response = await _ask(
        channel, "v1", Request(file_containing_symbol="grpc.reflection.v1.ServerReflection")
    )
    proto = _files(response)["grpc/reflection/v1/reflection.proto"]
    assert proto.package == "grpc.reflection.v1"
    [method] = proto.service[0].method
    assert (method.input_type, method.output_type) == (
        ".grpc.reflection.v1.ServerReflectionRequest",
        ".grpc.reflection.v1.ServerReflectionResponse",
    )
    fields = [f.type_name for m in proto.message_type for f in m.field if f.type_name]
    assert fields
    assert all(t.startswith(".grpc.reflection.v1.") for t in fields)


async def test_an_unknown_symbol_is_not_found(channel: grpc.aio.Channel) -> None:
    response = await _ask(channel, "v1", Request(file_containing_symbol="no.such.Service"))
    assert response.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
