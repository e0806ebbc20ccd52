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

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from callcontrol.api.auth import Authenticator
from callcontrol.api.interceptors import GatewayInterceptor
from callcontrol.api.ratelimit import RateLimiter, method_groups
from callcontrol.api.servicers import OperationsServicer, SessionCommandsServicer, SessionsServicer
from callcontrol.config import Address, GatewayConfig
from callcontrol.control import CallControl
from callcontrol.esl.link import OutboundLink
from callcontrol.events import EventStream
from callcontrol.metrics_http import MetricsServer
from callcontrol.rest.descriptor import load_api
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
        self.control = CallControl(config, self.events)
        self.link = OutboundLink(
            config.esl.listen,
            self.control,
            reply_timeout=config.esl.reply_timeout_ms / 1000,
            max_connections=config.esl.max_connections,
            allow=config.esl.allow_networks,
            max_frame_bytes=config.esl.max_frame_bytes,
            partial_frame_timeout=config.esl.partial_frame_timeout_ms / 1000,
        )
        self.health = HealthServicer()
        limiter = None
        if config.grpc_rate_limit_per_s > 0:
            groups = method_groups((b.service, b.method, b.group) for b in load_api().bindings)
            limiter = RateLimiter(config.grpc_rate_limit_per_s, groups)
        self.server = grpc.aio.server(
            interceptors=[GatewayInterceptor(Authenticator(config.applications), limiter)]
        )
        commands_pb2_grpc.add_SessionCommandsServicer_to_server(
            SessionCommandsServicer(self.control), self.server
        )
        operations_pb2_grpc.add_OperationsServicer_to_server(OperationsServicer(self.control), self.server)
        sessions_pb2_grpc.add_SessionsServicer_to_server(SessionsServicer(self.control), self.server)
        add_to_server(self.server, self.webhooks)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (
                *SERVICE_NAMES,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self.server,
        )
        self.metrics = MetricsServer(self._collect_metrics)
        self.metrics_address: Address | None = None
        self.grpc_address: Address | None = None
        self.esl_address: Address | None = None
        self._started = False
        self._stopped = False

    async def start(self) -> None:
        self._webhook_task = asyncio.create_task(self.webhooks.run(), name="webhook-delivery")
        self.esl_address = await self.link.start()
        listen = self.config.grpc_listen
        port = self.server.add_insecure_port(str(listen))
        if port == 0:
            raise OSError(f"cannot listen for gRPC on {listen}")
        self.grpc_address = Address(listen.host, port)
        await self.server.start()
        self._started = True
        if self.config.metrics_listen is not None:
            self.metrics_address = await self.metrics.start(self.config.metrics_listen)
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        for name in SERVICE_NAMES:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("gRPC listening on %s", self.grpc_address)

    async def shutdown(self, grace: float = 2.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._started:
            await self.health.enter_graceful_shutdown()
            await self.server.stop(grace)
        self.control.begin_shutdown()
        await self.link.shutdown()
        self.control.shutdown()
        await self.webhooks.shutdown()
        if self._webhook_task is not None:
            await self._webhook_task
        self.webhooks.close()
        await self.metrics.stop()
        log.info("gateway stopped")

    def _collect_metrics(self) -> dict[str, float]:
        return {
            "sessions_live": len(self.control.sessions),
            "operations_retained": len(self.control.operations),
            **self.webhooks.metrics(),
        }

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()
