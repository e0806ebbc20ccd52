"""GET /metrics: prometheus_client's exposition of RPCs, commands, the ESL link, webhooks, the process."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import aiohttp
import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from callcontrol.config import GatewayConfig, OperationsConfig
from callcontrol.events import CallInitiated, CommandResult, Subscription
from callcontrol.gateway import Gateway
from callcontrol.simulator import FreeSwitchSimulator
from callcontrol.v1 import commands_pb2, operations_pb2
from tests.conftest import DEMO_AUTH, Stubs, make_config, next_event

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

EXPECTED_FAMILIES = {
    "callcontrol_grpc_server_started": "counter",
    "callcontrol_grpc_server_handled": "counter",
    "callcontrol_grpc_server_handling_seconds": "histogram",
    "callcontrol_command_outcomes": "counter",
    "callcontrol_answer_confirmation_seconds": "histogram",
    "callcontrol_sessions_live": "gauge",
    "callcontrol_operations_retained": "gauge",
    "callcontrol_esl_connections": "gauge",
    "callcontrol_esl_frames_received": "counter",
    "callcontrol_esl_protocol_errors": "counter",
    "callcontrol_esl_reply_timeouts": "counter",
    "callcontrol_esl_reply_seconds": "histogram",
    "callcontrol_webhook_attempts": "counter",
    "callcontrol_webhook_deliveries_succeeded": "counter",
    "callcontrol_webhook_deliveries_failed": "counter",
    "callcontrol_webhook_attempt_latency_seconds": "histogram",
    "callcontrol_webhook_queue_depth": "gauge",
    "callcontrol_webhook_oldest_pending_age_seconds": "gauge",
    "process_cpu_seconds": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_open_fds": "gauge",
}


@pytest.fixture
def config() -> GatewayConfig:
    # A short answer deadline, so a timed-out answer is quick to produce.
    return replace(make_config(), operations=OperationsConfig(timeout_ms=1000))


async def _scrape(gateway: Gateway) -> tuple[str, dict[str, str], Samples]:
    assert gateway.metrics_address is not None
    url = f"http://{gateway.metrics_address}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = await response.text()
    kinds: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        assert family.documentation, f"{family.name} has no HELP"
        kinds[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return text, kinds, samples


_GET_OPERATION = {
    "grpc_service": "callcontrol.v1.Operations",
    "grpc_method": "GetOperation",
    "grpc_type": "unary",
}


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_exposition_has_every_family_with_help_and_counts_rpcs_commands_and_the_link(
    gateway: Gateway, simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> None:
    answered = await simulator.place_call()
    await next_event(events, CallInitiated, answered.uuid)
    silent = await simulator.place_call(answer_completes=False)
    await next_event(events, CallInitiated, silent.uuid)
    for call in (answered, silent):
        await stubs.commands.Answer(commands_pb2.AnswerRequest(session_id=call.uuid), metadata=DEMO_AUTH)
    results: dict[str, str] = {}
    while len(results) < 2:
        result = await next_event(events, CommandResult)
        results[result.session_id] = result.status
    assert results == {answered.uuid: "succeeded", silent.uuid: "timed_out"}
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stubs.operations.GetOperation(
            operations_pb2.GetOperationRequest(operation_id=str(uuid.uuid4())), metadata=DEMO_AUTH
        )
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError):
        await stubs.commands.Answer(
            commands_pb2.AnswerRequest(session_id=answered.uuid),
            metadata=(("x-app-id", "demo-app"), ("x-api-key", "not-the-key")),
        )

    # The server records an RPC once its handler has returned, which can be just after
    # the client has the status: wait (bounded) until the last two RPCs are counted.
    answer = {"grpc_service": "callcontrol.v1.SessionCommands", "grpc_method": "Answer", "grpc_type": "unary"}
    handled = "callcontrol_grpc_server_handled_total"
    async with asyncio.timeout(5):
        while True:
            _, kinds, samples = await _scrape(gateway)
            refused = _value(samples, handled, **answer, grpc_code="UNAUTHENTICATED")
            if refused >= 1 and _value(samples, handled, grpc_code="NOT_FOUND", **_GET_OPERATION) >= 1:
                break
            await asyncio.sleep(0.01)

    missing_families = {n: k for n, k in EXPECTED_FAMILIES.items() if kinds.get(n) != k}
    assert not missing_families, missing_families
    get_op = _GET_OPERATION
    assert _value(samples, "callcontrol_grpc_server_started_total", **answer) == 3
    assert _value(samples, handled, **answer, grpc_code="OK") == 2
    assert _value(samples, handled, **answer, grpc_code="UNAUTHENTICATED") == 1
    assert _value(samples, handled, **get_op, grpc_code="NOT_FOUND") == 1
    assert _value(samples, "callcontrol_grpc_server_handling_seconds_count", **answer) == 3

    outcomes = "callcontrol_command_outcomes_total"
    assert _value(samples, outcomes, command="answer", status="succeeded", reason="none") == 1
    assert _value(samples, outcomes, command="answer", status="timed_out", reason="timeout") == 1
    assert _value(samples, "callcontrol_answer_confirmation_seconds_count") == 1
    assert _value(samples, "callcontrol_answer_confirmation_seconds_sum") > 0

    assert _value(samples, "callcontrol_sessions_live") == 2
    assert _value(samples, "callcontrol_esl_connections") == 2
    # connect, myevents, linger and the two sendmsg replies per call at least.
    assert _value(samples, "callcontrol_esl_frames_received_total", content_type="command/reply") >= 8
    assert _value(samples, "callcontrol_esl_frames_received_total", content_type="text/event-plain") > 0
    assert _value(samples, "callcontrol_esl_reply_seconds_count") >= 2
    assert _value(samples, "process_cpu_seconds_total") > 0


async def test_large_counters_keep_every_digit(gateway: Gateway) -> None:
    # The hand-rendered exposition printed 6 significant digits (1.23457e+06).
    gateway.link.metrics.protocol_errors.inc(1234567)
    _, _, samples = await _scrape(gateway)
    assert _value(samples, "callcontrol_esl_protocol_errors_total") == 1234567


async def test_two_gateways_in_one_process_keep_their_own_metrics(gateway: Gateway) -> None:
    other = Gateway(make_config())
    await other.start()
    try:
        gateway.link.metrics.reply_timeouts.inc()
        _, _, mine = await _scrape(gateway)
        _, _, theirs = await _scrape(other)
    finally:
        await other.shutdown(grace=0.5)
    assert _value(mine, "callcontrol_esl_reply_timeouts_total") == 1
    assert _value(theirs, "callcontrol_esl_reply_timeouts_total") == 0


async def test_a_garbled_frame_from_freeswitch_counts_as_a_protocol_error(gateway: Gateway) -> None:
    assert gateway.esl_address is not None
    reader, writer = await asyncio.open_connection(gateway.esl_address.host, gateway.esl_address.port)
    try:
        assert await asyncio.wait_for(reader.readuntil(b"\n\n"), 5) == b"connect\n\n"
        writer.write(b"Content-Type: command/reply\nContent-Length: abc\n\n")
        await writer.drain()
        # Set-up is pipelined (one write); after it, nothing until the gateway hangs up.
        assert await asyncio.wait_for(reader.read(), 5) == b"myevents\n\nlinger\n\n"
    finally:
        writer.close()
    _, _, samples = await _scrape(gateway)
    assert _value(samples, "callcontrol_esl_protocol_errors_total") == 1


async def test_an_openmetrics_scraper_gets_openmetrics(gateway: Gateway) -> None:
    assert gateway.metrics_address is not None
    url = f"http://{gateway.metrics_address}/metrics"
    headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        text = await response.text()
    assert text.endswith("# EOF\n")
    assert "# TYPE callcontrol_webhook_attempts counter" in text
