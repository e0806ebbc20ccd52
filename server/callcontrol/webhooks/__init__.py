"""Webhooks: the event catalogue, signing, a durable outbox, delivery with retries.

The gateway wires ``WebhookService`` as an event sink (``emit``), runs it
(``run``/``shutdown``) and registers the ``Deliveries`` API with
``add_to_server``. The catalogue is documented in the top-level README.

The demo receiver is its own entry point, ``callcontrol.webhooks.demo_receiver``
(``start_demo_receiver``), kept out of this namespace so the gateway does not
import the ``standardwebhooks`` reference package it verifies with.
"""

from callcontrol.webhooks.catalogue import encode_body, event_body
from callcontrol.webhooks.outbox import (
    AttemptRecord,
    DeliveryRecord,
    DeliveryStatus,
    OutboxError,
    Outcome,
)
from callcontrol.webhooks.retry import RetryPolicy
from callcontrol.webhooks.service import RedeliverRefused, WebhookService
from callcontrol.webhooks.servicer import DeliveriesServicer, add_to_server
from callcontrol.webhooks.signing import SigningKey, webhook_headers

__all__ = [
    "AttemptRecord",
    "DeliveriesServicer",
    "DeliveryRecord",
    "DeliveryStatus",
    "OutboxError",
    "Outcome",
    "RedeliverRefused",
    "RetryPolicy",
    "SigningKey",
    "WebhookService",
    "add_to_server",
    "encode_body",
    "event_body",
    "webhook_headers",
]
