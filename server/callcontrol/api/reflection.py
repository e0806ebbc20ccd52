"""Server reflection under both names, ``grpc.reflection.v1`` and ``v1alpha``, with comments.

grpcio-reflection (1.85) implements only ``v1alpha``; current grpcurl and Postman
ask for ``v1`` first. The two protocols are the same messages with the same
field numbers under another package name, so one servicer answers both: ``v1``
is registered with the ``v1alpha`` (de)serializers, and its own file descriptor
(``grpc/reflection/v1/reflection.proto``) is derived from the ``v1alpha`` one by
renaming the package, so reflection can describe itself under either name.

The generated ``_pb2`` modules carry no comments; files found in the descriptor
set built with ``--include_source_info`` are served from there instead, so a
client's reflection shows the API's documentation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer
from grpc_reflection.v1alpha.reflection_pb2_grpc import add_ServerReflectionServicer_to_server

V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
V1 = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def _register_v1_descriptor() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_V1_FILE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    text = proto.SerializeToString()
    old, new = proto.package, "grpc.reflection.v1"
    proto = descriptor_pb2.FileDescriptorProto.FromString(text)
    proto.name, proto.package = _V1_FILE, new
    proto.options.Clear()  # Java/C# package options name v1alpha
    for message in proto.message_type:
        for f in message.field:
            if f.type_name.startswith(f".{old}."):
                f.type_name = f".{new}." + f.type_name[len(old) + 2 :]
    for service in proto.service:
        for m in service.method:
            m.input_type = f".{new}." + m.input_type[len(old) + 2 :]
            m.output_type = f".{new}." + m.output_type[len(old) + 2 :]
    pool.Add(proto)


def _with_source_info(path: Path | None) -> dict[str, bytes]:
    if path is None or not path.is_file():
        return {}
    files = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file
    return {f.name: f.SerializeToString() for f in files if f.HasField("source_code_info")}


class _DocumentedReflection(ReflectionServicer):  # type: ignore[misc]
    """The stock servicer, answering file requests with the commented descriptors we have."""

    def __init__(self, service_names: Iterable[str], documented: dict[str, bytes]) -> None:
        super().__init__(service_names)
        self._documented = documented

    async def ServerReflectionInfo(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        async for response in super().ServerReflectionInfo(request_iterator, context):
            if response.HasField("file_descriptor_response") and self._documented:
                files = response.file_descriptor_response.file_descriptor_proto
                for i, data in enumerate(files):
                    name = descriptor_pb2.FileDescriptorProto.FromString(data).name
                    files[i] = self._documented.get(name, data)
            yield response


def enable_reflection(
    server: grpc.aio.Server, service_names: Iterable[str], descriptor_set: Path | None
) -> None:
    """Serve reflection v1 and v1alpha for ``service_names`` (plus both reflection services)."""
    _register_v1_descriptor()
    servicer = _DocumentedReflection((*service_names, V1, V1ALPHA), _with_source_info(descriptor_set))
    add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(V1, {"ServerReflectionInfo": v1}),))
