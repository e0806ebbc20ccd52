"""The composition root: one place that builds and wires every part.

``Gateway.start()`` opens the webhook outbox, binds the outbound Event Socket
listener and the gRPC server (with health and reflection). ``shutdown()`` is
idempotent and stops in the order that loses nothing: stop taking RPCs (grace
period), close the call sockets (calls go back to their dialplan; their last
events are still stored), cancel deadlines, then let webhook delivery finish
what it is doing and close the outbox (pending events wait for the next start).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from callcontrol.api.auth import Authenticator
from callcontrol.api.interceptors import GatewayInterceptor
from callcontrol.api.ratelimit import AuthFailureLimiter, RateLimiter, method_groups
from callcontrol.api.reflection import enable_reflection
from callcontrol.api.servicers import OperationsServicer, SessionCommandsServicer, SessionsServicer
from callcontrol.api.tls import server_credentials
from callcontrol.cluster.node import ClusterNode
from callcontrol.config import Address, GatewayConfig
from callcontrol.control import CallControl
from callcontrol.errors import GatewayError
from callcontrol.esl.link import OutboundLink
from callcontrol.events import EventStream
from callcontrol.metrics import CommandMetrics, LinkMetrics, RpcMetrics, include, new_registry
from callcontrol.metrics_http import MetricsServer
from callcontrol.rest.descriptor import default_descriptor_path, load_api
from callcontrol.startup import StartupError, bind_failed, ensure_bindable
from callcontrol.v1 import (
    commands_pb2,
    commands_pb2_grpc,
    deliveries_pb2,
    operations_pb2,
    operations_pb2_grpc,
    sessions_pb2,
    sessions_pb2_grpc,
)
from callcontrol.webhooks import WebhookService, add_to_server

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    commands_pb2.DESCRIPTOR.services_by_name["SessionCommands"].full_name,
    operations_pb2.DESCRIPTOR.services_by_name["Operations"].full_name,
    sessions_pb2.DESCRIPTOR.services_by_name["Sessions"].full_name,
    deliveries_pb2.DESCRIPTOR.services_by_name["Deliveries"].full_name,
)


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        *,
        events: EventStream | None = None,
        webhooks: WebhookService | None = None,
    ) -> None:
        self.config = config
        self.events = events or EventStream()
        self.webhooks = webhooks or WebhookService(config)
        self.events.add_sink(self.webhooks)
        self._webhook_task: asyncio.Task[None] | None = None
        # Per gateway, not prometheus_client's global one: several gateways share a test process.
        self.registry = new_registry()
        include(self.registry, self.webhooks.registry)
        commands = CommandMetrics(self.registry)
        self.control = CallControl(config, self.events, commands)
        commands.sessions.set_function(lambda: len(self.control.sessions))
        commands.operations.set_function(lambda: len(self.control.operations))
        # This replica's name in the cluster (webhook outbox leases use it too).
        self.replica_id = config.cluster.replica_id or f"{socket.gethostname()}-{os.getpid()}"
        self.cluster: ClusterNode | None = None
        if config.cluster.enabled:
            if config.grpc_tls.enabled:
                # Forwarding between replicas is plaintext gRPC for now.
                raise StartupError("cluster.redis_url: cluster mode does not support grpc.tls yet")
            self.cluster = ClusterNode(config, self.replica_id, self.control)
            self.events.add_sink(self.cluster)
            self.control.admit = self.cluster.admit
        self.link = OutboundLink(
            config.esl.listen,
            self.control,
            reply_timeout=config.esl.reply_timeout_ms / 1000,
            max_connections=config.esl.max_connections,
            metrics=LinkMetrics(self.registry),
            allow=config.esl.allow_networks,
            max_frame_bytes=config.esl.max_frame_bytes,
            partial_frame_timeout=config.esl.partial_frame_timeout_ms / 1000,
            channel_fields=self.control.channel_fields,
            reuse_port=config.cluster.enabled,
        )
        self.health = HealthServicer()
        # The one place requests are limited, for gRPC and REST (Envoy has no limiter).
        limits = config.limits
        limiter = None
        if limits.rate_limit_per_s > 0:
            groups = method_groups((b.service, b.method, b.group) for b in load_api().bindings)
            limiter = RateLimiter(limits.rate_limit_per_s, groups)
        auth_failures = None
        if limits.auth_failures_per_minute > 0:
            auth_failures = AuthFailureLimiter(limits.auth_failures_per_minute)
        self.server = grpc.aio.server(
            interceptors=[
                GatewayInterceptor(
                    Authenticator(config.applications), limiter, RpcMetrics(self.registry), auth_failures
                )
            ],
            # grpcio sets SO_REUSEPORT by default: a second gateway on the same
            # port would start "fine" and the kernel would split connections.
            options=[("grpc.so_reuseport", 0)],
        )
        commands_pb2_grpc.add_SessionCommandsServicer_to_server(
            SessionCommandsServicer(self.control, self.cluster), self.server
        )
        operations_pb2_grpc.add_OperationsServicer_to_server(
            OperationsServicer(self.control, self.cluster), self.server
        )
        sessions_pb2_grpc.add_SessionsServicer_to_server(
            SessionsServicer(self.control, self.cluster), self.server
        )
        add_to_server(self.server, self.webhooks)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        # Reflection v1 and v1alpha, with the comments of the descriptor set.
        enable_reflection(
            self.server,
            (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name),
            default_descriptor_path(),
        )
        # Read now, so a bad certificate stops the start before anything binds.
        self._grpc_credentials = server_credentials(config.grpc_tls)
        self.metrics = MetricsServer(self.registry)
        self.metrics_address: Address | None = None
        self.grpc_address: Address | None = None
        self.esl_address: Address | None = None
        self._started = False
        self._stopped = False

    async def start(self) -> None:
        """Bind every listener; StartupError names the one that cannot, after undoing the rest."""
        try:
            await self._start()
        except BaseException:
            await self.shutdown(grace=0)
            raise

    async def _start(self) -> None:
        self._webhook_task = asyncio.create_task(self.webhooks.run(), name="webhook-delivery")
        try:
            self.esl_address = await self.link.start()
        except OSError as exc:
            raise bind_failed("esl.listen", self.config.esl.listen, exc) from exc
        listen = self.config.grpc_listen
        ensure_bindable("grpc.listen", listen)
        try:
            if self._grpc_credentials is not None:
                port = self.server.add_secure_port(str(listen), self._grpc_credentials)
            else:
                port = self.server.add_insecure_port(str(listen))
        except RuntimeError as exc:
            raise StartupError(f"grpc.listen {listen}: {exc}") from exc
        self.grpc_address = Address(listen.host, port)
        await self.server.start()
        self._started = True
        if self.cluster is not None:
            advertise = self.config.cluster.advertise or str(self.grpc_address)
            try:
                await self.cluster.start(advertise)
            except GatewayError as exc:
                raise StartupError(f"cluster.redis_url: {exc.message}") from exc
        if self.config.metrics_listen is not None:
            try:
                self.metrics_address = await self.metrics.start(self.config.metrics_listen)
            except OSError as exc:
                raise bind_failed("metrics.listen", self.config.metrics_listen, exc) from exc
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        for name in SERVICE_NAMES:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        tls = "TLS" if self._grpc_credentials is not None else "plaintext"
        log.info("gRPC listening on %s (%s)", self.grpc_address, tls)

    async def shutdown(self, grace: float = 2.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._started:
            await self.health.enter_graceful_shutdown()
            await self.server.stop(grace)
        self.control.begin_shutdown()
        if self.cluster is not None and self._started:
            await self.cluster.release()
        await self.link.shutdown()
        self.control.shutdown()
        if self.cluster is not None:
            await self.cluster.shutdown()
        await self.webhooks.shutdown()
        if self._webhook_task is not None:
            await self._webhook_task
        self.webhooks.close()
        await self.metrics.stop()
        log.info("gateway stopped")

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()
