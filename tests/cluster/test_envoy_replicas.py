"""Headline: REST through a real Envoy in front of any replica reaches the call's owner."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from callcontrol.simulator import FreeSwitchSimulator
from tests.cluster.replicas import ReplicaProcess, replica_group
from tests.redis_server import RedisServer
from tests.rest.conftest import JSON_HEADERS, Reply, RestClient
from tests.rest.test_rest_commands import assert_envelope


@pytest.fixture
async def two_replicas(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[list[ReplicaProcess]]:
    async with replica_group() as start:
        yield [await start(tmp_path, name, redis_server.url) for name in ("a", "b")]


async def _until_ok(client: RestClient, path: str, timeout: float = 10.0) -> Reply:  # noqa: ASYNC109
    """GET until 200: a session is known to the cluster once its owner has recorded it."""
    deadline = time.monotonic() + timeout
    while True:
        reply = await client.get(path)
        if reply.status == 200 or time.monotonic() > deadline:
            assert reply.status == 200, reply.body
            return reply
        await asyncio.sleep(0.05)  # a client's retry


async def test_rest_commands_through_another_replicas_envoy_reach_the_owner(
    two_replicas: list[ReplicaProcess],
) -> None:
    a, b = two_replicas
    sim = FreeSwitchSimulator(*a.esl)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        via_a, via_b = RestClient(http, a.rest_url), RestClient(http, b.rest_url)
        try:
            call = await sim.place_call(gateway=a.esl)
            session = await _until_ok(via_b, f"/api/v1/sessions/{call.uuid}")
            assert session.json()["state"] == "ringing"

            # answer through b's Envoy; the call lives on a.
            answer_uid = str(uuid.uuid4())
            path = f"/api/v1/sessions/{call.uuid}/commands/answer"
            first = await via_b.post(path, headers=JSON_HEADERS, data=json.dumps({"command_uid": answer_uid}))
            answer = assert_envelope(first.status, first.body)
            await asyncio.wait_for(call.answered.wait(), 10)
            # The same command_uid again, through a's Envoy: the same operation, sent once.
            again = await via_a.post(path, headers=JSON_HEADERS, data=json.dumps({"command_uid": answer_uid}))
            assert again.status == 202, again.body
            assert again.json()["operation_id"] == answer["operation_id"]

            listed = await via_b.get("/api/v1/sessions")
            assert listed.status == 200, listed.body
            assert call.uuid in [s["session_id"] for s in listed.json()["sessions"]]

            # Bad input through b is still rejected by b's Envoy/gateway, and changes nothing.
            sent = len(call.commands)
            bad = await via_b.post(
                f"/api/v1/sessions/{call.uuid}/commands/hangup",
                headers=JSON_HEADERS,
                data=json.dumps({"cause": "USER_BUSY", "bogus": 1}),
            )
            assert bad.status == 400, bad.body

            hangup_uid = str(uuid.uuid4())
            path = f"/api/v1/sessions/{call.uuid}/commands/hangup"
            body = json.dumps({"cause": "USER_BUSY", "command_uid": hangup_uid})
            first = await via_b.post(path, headers=JSON_HEADERS, data=body)
            hangup = assert_envelope(first.status, first.body)
            again = await via_a.post(path, headers=JSON_HEADERS, data=body)
            assert again.status == 202, again.body
            assert again.json()["operation_id"] == hangup["operation_id"]
            await asyncio.wait_for(call.hung_up.wait(), 10)

            # The bad request sent nothing; each command reached the switch exactly once.
            assert [c.headers.get("call-command") for c in call.commands[sent:]].count("hangup") == 1
            answers = [c for c in call.commands if c.headers.get("execute-app-name") == "answer"]
            hangups = [c for c in call.commands if c.headers.get("call-command") == "hangup"]
            assert (len(answers), len(hangups)) == (1, 1)
            assert hangups[0].headers.get("hangup-cause") == "USER_BUSY"
            assert call.connections == [a.esl]
        finally:
            await sim.close()
