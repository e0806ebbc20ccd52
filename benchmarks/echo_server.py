"""A bare grpc.aio unary echo: the ceiling for any Python gRPC service on this machine.

Raw bytes in, the same bytes out (no protobuf work, no interceptors), on a
server built like the gateway's (``grpc.aio.server()``). ``python -m benchmarks.echo_server``
"""

from __future__ import annotations

import grpc

from benchmarks import worker

SERVICE = "bench.Echo"
METHOD = f"/{SERVICE}/Echo"

_server: grpc.aio.Server | None = None


async def _echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def start() -> worker.Json:
    global _server
    server = grpc.aio.server()
    # No (de)serializers: bytes stay bytes.
    handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(_echo)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Echo": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    _server = server
    return {"address": f"127.0.0.1:{port}"}


if __name__ == "__main__":
    worker.main({}, start)
