"""``GET /metrics``: a registry's exposition, rendered by ``prometheus_client``.

An aiohttp route rather than prometheus_client's own server: it runs on the
event loop, so collectors may read loop-owned state (the outbox, the session
registry) without locks. The text or OpenMetrics format is chosen from the
scraper's ``Accept`` header. Loopback by default (``metrics.listen``).
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from callcontrol.config import Address


class MetricsServer:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._runner: web.AppRunner | None = None

    async def start(self, listen: Address) -> Address:
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, listen.host, listen.port)
        await site.start()
        port = self._runner.addresses[0][1]
        return Address(listen.host, port)

    async def _handle(self, request: web.Request) -> web.Response:
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(self._registry), headers={"Content-Type": content_type})

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
