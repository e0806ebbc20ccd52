"""The demo receiver: verifies with standardwebhooks, refuses forgeries, acknowledges repeats."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from callcontrol.webhooks import SigningKey, WebhookService, webhook_headers
from callcontrol.webhooks.demo_receiver import main, start_demo_receiver

from .conftest import (
    FAST_RETRY,
    SECRET_A,
    SECRET_B,
    answered,
    app,
    eventually,
    hook_config,
    running,
    session_id,
)


@pytest.fixture
async def demo() -> AsyncIterator[tuple[web.AppRunner, str]]:
    runner, url = await start_demo_receiver("127.0.0.1", 0, [SECRET_B, SECRET_A])
    yield runner, url
    await runner.cleanup()


async def test_the_gateway_delivers_to_the_demo_receiver(demo: tuple[web.AppRunner, str]) -> None:
    _, url = demo
    assert url.startswith("http://127.0.0.1:")
    assert url.endswith("/webhooks")
    service = WebhookService(hook_config(app("demo", url, SECRET_A)), retry=FAST_RETRY)
    async with running(service):
        service.emit(answered("demo", session_id()))
        await eventually(lambda: service.metrics()["webhook_deliveries_succeeded_total"] == 1)


async def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as response:
        return response.status


async def test_a_forged_or_unsigned_webhook_is_refused(demo: tuple[web.AppRunner, str]) -> None:
    _, url = demo
    body = b'{"id":"evt_1","type":"call.answered"}'
    forged = webhook_headers("evt_1", int(time.time()), body, [SigningKey(b"not-the-secret-at-all")])
    assert await _post(url, body, forged) == 400
    assert await _post(url, body, {}) == 400
    broken = {**forged, "webhook-signature": "garbage"}
    assert await _post(url, body, broken) == 400


async def test_a_repeat_is_acknowledged(demo: tuple[web.AppRunner, str]) -> None:
    _, url = demo
    body = b'{"id":"evt_2","type":"call.answered"}'
    headers = webhook_headers("evt_2", int(time.time()), body, [SigningKey.parse(SECRET_A)])
    assert await _post(url, body, headers) == 204
    assert await _post(url, body, headers) == 204


def test_the_command_line_refuses_a_bad_listen_address(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--listen", "nowhere"])
    assert "--listen" in capsys.readouterr().err
