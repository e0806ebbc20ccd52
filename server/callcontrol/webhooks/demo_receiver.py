"""A small webhook receiver for the demo: verifies each webhook and logs it.

It does what a real receiver should: verify the Standard Webhooks signature
with the reference ``standardwebhooks`` package (any of the configured
secrets may match, for rotation), refuse what does not verify with 400, and
recognise a repeat by its ``webhook-id`` (at-least-once delivery means a
receiver will see some events twice) and acknowledge it without acting again.

    python -m callcontrol.webhooks.demo_receiver --listen 127.0.0.1:8090 --secret whsec_...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
from collections import OrderedDict
from collections.abc import Sequence

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from callcontrol.config import DEMO_WEBHOOK_SECRET, Address, ConfigError

__all__ = ["DemoReceiver", "start_demo_receiver"]

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks"
_REMEMBERED_IDS = 10000


class DemoReceiver:
    """Verifies, deduplicates and logs; keeps the last events for a look."""

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("at least one webhook secret is required")
        self._verifiers = tuple(Webhook(secret) for secret in secrets)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.received: list[dict[str, object]] = []

    def verify(self, body: bytes, headers: dict[str, str]) -> dict[str, object] | None:
        for verifier in self._verifiers:
            try:
                payload = verifier.verify(body, headers)
            except WebhookVerificationError:
                continue
            if isinstance(payload, dict):
                return payload
        return None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            payload = self.verify(body, headers)
        except (ValueError, UnicodeDecodeError):  # malformed signature header or body
            payload = None
        if payload is None:
            log.warning("rejected a webhook that does not verify (webhook-id %s)", headers.get("webhook-id"))
            return web.json_response({"error": "signature does not verify"}, status=400)
        webhook_id = headers["webhook-id"]
        if webhook_id in self._seen:
            log.info("duplicate %s %s: already handled", payload.get("type"), webhook_id)
            return web.Response(status=204)
        self._seen[webhook_id] = None
        if len(self._seen) > _REMEMBERED_IDS:
            self._seen.popitem(last=False)
        self.received.append(payload)
        del self.received[:-100]
        log.info("webhook %s", json.dumps(payload, separators=(",", ":")))
        return web.Response(status=204)

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_post(WEBHOOK_PATH, self.handle)
        return app


async def start_demo_receiver(host: str, port: int, secrets: Sequence[str]) -> tuple[web.AppRunner, str]:
    """Start the receiver; returns its runner (``await runner.cleanup()`` stops it) and URL."""
    runner = web.AppRunner(DemoReceiver(secrets).application(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if port == 0 else port
    shown = f"[{host}]" if ":" in host else host
    return runner, f"http://{shown}:{bound}{WEBHOOK_PATH}"


async def _serve(listen: Address, secrets: Sequence[str]) -> None:
    runner, url = await start_demo_receiver(listen.host, listen.port, secrets)
    log.info("demo webhook receiver listening on %s", url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--listen", default="127.0.0.1:8090", help="host:port (default %(default)s)")
    parser.add_argument(
        "--secret",
        action="append",
        dest="secrets",
        help="whsec_ secret; repeat for rotation (default: the demo application's secret)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        listen = Address.parse(args.listen, "--listen")
    except ConfigError as exc:
        parser.error(str(exc))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(listen, args.secrets or [DEMO_WEBHOOK_SECRET]))


if __name__ == "__main__":
    main()
