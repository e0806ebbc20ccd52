"""A cluster replica for the takeover test: a WebhookService on a shared Redis, in its own process.

    python -m tests.webhooks.cluster_worker --redis URL --url URL --replica ID [--emit ...]

It prints ``holding`` once it holds the application's delivery lease, then
with ``--emit`` emits S x N events (ids from ``crash_worker.event_ids``) and
prints ``emitted``; it delivers until SIGTERM (or dies to SIGKILL).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys

from callcontrol.config import ClusterConfig, GatewayConfig
from callcontrol.webhooks import WebhookService

from .conftest import FAST_RETRY, SECRET_A, app, hook_config
from .crash_worker import APP_ID, add_emit_arguments, serve

# Short, for test time; generous enough that a loaded machine does not starve a lease away.
HEARTBEAT_MS, EXPIRY_MS = 250, 1500


def cluster_config(redis_url: str, receiver_url: str, replica: str, *, concurrency: int = 4) -> GatewayConfig:
    """One application delivering to ``receiver_url``, as replica ``replica`` of the cluster."""
    config = hook_config(app(APP_ID, receiver_url, SECRET_A), request_timeout_s=30, concurrency=concurrency)
    return dataclasses.replace(
        config,
        cluster=ClusterConfig(
            redis_url=redis_url, replica_id=replica, heartbeat_ms=HEARTBEAT_MS, expiry_ms=EXPIRY_MS
        ),
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--replica", required=True)
    add_emit_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    service = WebhookService(cluster_config(args.redis, args.url, args.replica), retry=FAST_RETRY)

    async def holding() -> None:
        while APP_ID not in service.delivering_apps:  # noqa: ASYNC110 - a property, no event to await
            await asyncio.sleep(0.01)
        print("holding", flush=True)

    await serve(service, args, holding)


if __name__ == "__main__":
    asyncio.run(main())
