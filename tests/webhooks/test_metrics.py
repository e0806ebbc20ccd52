"""Webhook metrics as Prometheus sees them: the oldest pending delivery's age."""

from __future__ import annotations

import time

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from callcontrol.webhooks import WebhookService

from .conftest import (
    FAST_RETRY,
    Receiver,
    accept,
    answered,
    app,
    eventually,
    hook_config,
    running,
    session_id,
)


def _oldest_age(service: WebhookService) -> float:
    text = generate_latest(service.registry).decode()
    [family] = [
        f for f in text_string_to_metric_families(text) if f.name.endswith("oldest_pending_age_seconds")
    ]
    assert family.type == "gauge"
    assert family.documentation
    return float(family.samples[0].value)


async def test_oldest_pending_age_grows_while_a_delivery_waits_and_is_zero_once_delivered(
    receiver: Receiver,
) -> None:
    offset = [0.0]
    service = WebhookService(
        hook_config(app("a", receiver.url)), retry=FAST_RETRY, clock=lambda: time.time() + offset[0]
    )
    assert _oldest_age(service) == 0
    service.emit(answered("a", session_id()))  # not running yet: it waits in the outbox
    offset[0] = 42.0
    assert 42.0 <= _oldest_age(service) < 52.0

    receiver.behaviour = accept
    async with running(service):
        await eventually(lambda: service.metrics()["webhook_queue_depth"] == 0)
        assert _oldest_age(service) == 0
    service.close()
    assert _oldest_age(service) == 0  # a scrape after close does not touch the closed outbox
