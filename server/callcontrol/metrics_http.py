"""A Prometheus text endpoint (``GET /metrics``) for the gateway's counters.

Samples come as one flat mapping of Prometheus-style names (histograms
already split into ``_bucket{le=...}``/``_sum``/``_count``); this module only
groups them into families and writes the text format. Loopback by default.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from aiohttp import web

from callcontrol.config import Address

Collector = Callable[[], Mapping[str, float]]
_HISTOGRAM_PART = re.compile(r"_(bucket|sum|count)$")


def _family(sample: str) -> tuple[str, str]:
    name = sample.split("{", 1)[0]
    base = _HISTOGRAM_PART.sub("", name)
    if base != name:
        return base, "histogram"
    return name, "counter" if name.endswith("_total") else "gauge"


def render(samples: Mapping[str, float]) -> str:
    families: dict[str, tuple[str, list[str]]] = {}
    for sample, value in samples.items():
        base, kind = _family(sample)
        families.setdefault(base, (kind, []))[1].append(f"callcontrol_{sample} {value:g}")
    lines = []
    for base, (kind, rows) in families.items():
        lines.append(f"# TYPE callcontrol_{base} {kind}")
        lines.extend(rows)
    return "\n".join(lines) + "\n"


class MetricsServer:
    def __init__(self, collect: Collector) -> None:
        self._collect = collect
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
        return web.Response(text=render(self._collect()), content_type="text/plain", charset="utf-8")

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
