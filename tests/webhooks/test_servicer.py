"""The Deliveries gRPC service in-process: own deliveries only, paging, detail, redeliver."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.api import annotations_pb2, http_pb2

from callcontrol.api.identity import set_current_app
from callcontrol.config import ClusterConfig, GatewayConfig
from callcontrol.errors import FailedPrecondition, GatewayError, InvalidArgument, NotFound, Unavailable
from callcontrol.v1 import deliveries_pb2 as pb
from callcontrol.v1 import deliveries_pb2_grpc as pb_grpc
from callcontrol.webhooks import DeliveryStatus, WebhookService, add_to_server

from .conftest import (
    FAST_RETRY,
    Receiver,
    accept,
    answered,
    app,
    eventually,
    hook_config,
    respond,
    session_id,
)

_CODES: dict[type[GatewayError], grpc.StatusCode] = {
    NotFound: grpc.StatusCode.NOT_FOUND,
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
}


class ActAsApp(grpc.aio.ServerInterceptor):
    """Stands in for the gateway's auth interceptor: x-app-id names the caller, errors become codes."""

    def __init__(self, config: GatewayConfig) -> None:
        self._config = config

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]], details: Any) -> Any:
        handler = await continuation(details)
        caller = self._config.application(dict(details.invocation_metadata)["x-app-id"])
        inner = handler.unary_unary

        async def as_caller(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            assert caller is not None
            set_current_app(caller)
            try:
                return await inner(request, context)
            except GatewayError as exc:
                await context.abort(_CODES[type(exc)], exc.message)

        return grpc.unary_unary_rpc_method_handler(
            as_caller,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class Api:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = pb_grpc.DeliveriesStub(channel)

    def as_app(self, app_id: str) -> tuple[tuple[str, str], ...]:
        return (("x-app-id", app_id),)

    async def list(self, app_id: str, **kw: Any) -> pb.ListDeliveriesResponse:
        return await self._stub.ListDeliveries(pb.ListDeliveriesRequest(**kw), metadata=self.as_app(app_id))

    async def get(self, app_id: str, delivery_id: str) -> pb.Delivery:
        request = pb.GetDeliveryRequest(delivery_id=delivery_id)
        return await self._stub.GetDelivery(request, metadata=self.as_app(app_id))

    async def redeliver(self, app_id: str, delivery_id: str) -> pb.Delivery:
        request = pb.RedeliverDeliveryRequest(delivery_id=delivery_id)
        return await self._stub.RedeliverDelivery(request, metadata=self.as_app(app_id))


@pytest.fixture(params=["sqlite", "redis"])
async def service(receiver: Receiver, request: pytest.FixtureRequest) -> AsyncIterator[WebhookService]:
    """The same API on the single gateway's SQLite outbox and on a cluster's Redis outbox."""
    receiver.behaviour = respond(400)
    config = hook_config(app("a", receiver.url), app("b", receiver.url))
    if request.param == "redis":
        redis_url = request.getfixturevalue("redis_server").url
        config = dataclasses.replace(config, cluster=ClusterConfig(redis_url=redis_url, heartbeat_ms=100))
    svc = WebhookService(config, retry=FAST_RETRY)
    task = asyncio.create_task(svc.run())
    yield svc
    await svc.shutdown()
    await task
    svc.close()


@pytest.fixture
async def api(service: WebhookService) -> AsyncIterator[Api]:
    config = hook_config(app("a", "http://x"), app("b", "http://x"))
    server = grpc.aio.server(interceptors=[ActAsApp(config)])
    add_to_server(server, service)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Api(channel)
    await server.stop(None)


async def _failed(service: WebhookService, app_id: str, count: int) -> list[str]:
    events = [answered(app_id, session_id()) for _ in range(count)]
    for event in events:
        service.emit(event)
    await eventually(
        lambda: all(
            (r := service.get_delivery(app_id, e.event_id)) is not None and r.status is DeliveryStatus.FAILED
            for e in events
        )
    )
    return [e.event_id for e in events]


async def _code(call: Awaitable[Any]) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code()


async def test_lists_the_callers_failed_deliveries_newest_first(service: WebhookService, api: Api) -> None:
    ids_a = await _failed(service, "a", 3)
    ids_b = await _failed(service, "b", 2)
    listed = await api.list("a")
    assert [d.delivery_id for d in listed.deliveries] == ids_a[::-1]
    assert listed.next_page_token == ""
    first = listed.deliveries[0]
    assert (first.status, first.event_type, first.attempt_count, first.last_status_code) == (
        "failed",
        "call.answered",
        1,
        400,
    )
    assert first.HasField("created_at")
    assert first.HasField("finished_at")
    assert not first.HasField("next_attempt_at")
    assert len(first.attempts) == 0  # detail only from GetDelivery
    assert first.body == ""
    assert [d.delivery_id for d in (await api.list("b", status="failed")).deliveries] == ids_b[::-1]


async def test_lists_by_status(service: WebhookService, api: Api, receiver: Receiver) -> None:
    receiver.behaviour = accept
    service.emit(event := answered("a", session_id()))
    await eventually(lambda: service.metrics()["webhook_deliveries_succeeded_total"] == 1)
    await service.flush()  # counted when recorded; in Redis, stored once acknowledged
    delivered = await api.list("a", status="delivered")
    assert [d.delivery_id for d in delivered.deliveries] == [event.event_id]
    assert (await api.list("a", status="pending")).deliveries == []
    assert await _code(api.list("a", status="lost")) is grpc.StatusCode.INVALID_ARGUMENT


async def test_pages_through_a_long_list(service: WebhookService, api: Api) -> None:
    ids = (await _failed(service, "a", 5))[::-1]
    seen: list[str] = []
    token = ""
    while True:
        page = await api.list("a", page_size=2, page_token=token)
        assert len(page.deliveries) <= 2
        seen.extend(d.delivery_id for d in page.deliveries)
        token = page.next_page_token
        if not token:
            break
    assert seen == ids
    first_page = await api.list("a", page_size=2)
    assert await _code(api.list("a", page_token="garbage!")) is grpc.StatusCode.INVALID_ARGUMENT
    wrong_listing = api.list("a", status="delivered", page_token=first_page.next_page_token)
    assert await _code(wrong_listing) is grpc.StatusCode.INVALID_ARGUMENT
    assert await _code(api.list("a", page_size=-1)) is grpc.StatusCode.INVALID_ARGUMENT
    # Refused like every other list's (was silently capped at 1000).
    assert await _code(api.list("a", page_size=1001)) is grpc.StatusCode.INVALID_ARGUMENT
    assert len((await api.list("a", page_size=1000)).deliveries) == 5


async def test_get_shows_every_attempt_and_the_body(service: WebhookService, api: Api) -> None:
    (delivery_id,) = await _failed(service, "a", 1)
    delivery = await api.get("a", delivery_id)
    assert delivery.delivery_id == delivery_id
    assert delivery.status == "failed"
    assert '"type":"call.answered"' in delivery.body
    (attempt,) = delivery.attempts
    assert (attempt.attempt, attempt.status_code, attempt.outcome) == (1, 400, "failed")
    assert attempt.url.endswith("/hooks")
    assert attempt.latency_ms > 0
    assert attempt.HasField("started_at")


async def test_another_applications_delivery_does_not_exist(service: WebhookService, api: Api) -> None:
    (delivery_id,) = await _failed(service, "a", 1)
    assert await _code(api.get("b", delivery_id)) is grpc.StatusCode.NOT_FOUND
    assert await _code(api.redeliver("b", delivery_id)) is grpc.StatusCode.NOT_FOUND
    assert await _code(api.get("a", "no-such-id")) is grpc.StatusCode.NOT_FOUND
    assert await _code(api.get("a", "")) is grpc.StatusCode.INVALID_ARGUMENT
    assert await _code(api.get("a", "x" * 200)) is grpc.StatusCode.INVALID_ARGUMENT


async def test_redeliver_sends_it_again(service: WebhookService, api: Api, receiver: Receiver) -> None:
    (delivery_id,) = await _failed(service, "a", 1)
    receiver.behaviour = accept
    queued = await api.redeliver("a", delivery_id)
    assert queued.status == "pending"
    assert queued.HasField("next_attempt_at")
    await receiver.wait_for(lambda: receiver.ids().count(delivery_id) == 2)
    await eventually(lambda: service.metrics()["webhook_deliveries_succeeded_total"] == 1)
    await service.flush()  # counted when recorded; in Redis, stored once acknowledged
    delivered = await api.get("a", delivery_id)
    assert delivered.status == "delivered"
    assert [a.status_code for a in delivered.attempts] == [400, 204]


async def test_redeliver_of_a_pending_delivery_is_refused(
    service: WebhookService, api: Api, receiver: Receiver
) -> None:
    gate = asyncio.Event()

    async def held(_: Any) -> Any:
        await gate.wait()
        return await accept(_)

    receiver.behaviour = held
    service.emit(event := answered("a", session_id()))
    await receiver.wait_for_count(1)
    assert await _code(api.redeliver("a", event.event_id)) is grpc.StatusCode.FAILED_PRECONDITION
    gate.set()


def test_rest_bindings_are_under_api_v1_webhooks_deliveries() -> None:
    methods = pb.DESCRIPTOR.services_by_name["Deliveries"].methods_by_name
    rules: dict[str, http_pb2.HttpRule] = {
        name: method.GetOptions().Extensions[annotations_pb2.http] for name, method in methods.items()
    }
    assert rules["ListDeliveries"].get == "/api/v1/webhooks/deliveries"
    assert rules["GetDelivery"].get == "/api/v1/webhooks/deliveries/{delivery_id}"
    assert rules["RedeliverDelivery"].post == "/api/v1/webhooks/deliveries/{delivery_id}/redeliver"
    assert rules["RedeliverDelivery"].body == "*"


async def test_a_cluster_replica_without_redis_answers_unavailable(
    service: WebhookService, api: Api, request: pytest.FixtureRequest
) -> None:
    if "redis_server" not in request.fixturenames:
        pytest.skip("only a cluster's store can be out of reach")
    (event_id,) = await _failed(service, "a", 1)
    assert (await api.get("a", event_id)).status == "failed"
    request.getfixturevalue("redis_server").stop(kill=True)
    assert await _code(api.get("a", event_id)) == grpc.StatusCode.UNAVAILABLE
    assert await _code(api.list("a")) == grpc.StatusCode.UNAVAILABLE
    assert await _code(api.redeliver("a", event_id)) == grpc.StatusCode.UNAVAILABLE
