"""Hostile or unlucky Event Socket peers: one socket never hurts another call.

Each test drives a real TCP connection to the gateway's outbound listener,
either the simulator (a well-behaved FreeSWITCH) or `RawPeer`, which says
exactly what the test tells it to.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from callcontrol.config import Address, EslConfig, GatewayConfig
from callcontrol.esl.frames import encode_reply
from callcontrol.esl.link import RefusalLog
from callcontrol.events import CallHangup, CallInitiated, Subscription
from callcontrol.gateway import Gateway
from callcontrol.simulator import FreeSwitchSimulator
from tests.conftest import Stubs, drain, make_config, next_event
from tests.esl_peer import RawPeer
from tests.gateway.calls import answer_succeeds, connected, esl_address, raw_connected


def _esl(**settings: object) -> GatewayConfig:
    esl: dict[str, object] = {"listen": Address("127.0.0.1", 0), "reply_timeout_ms": 2000, **settings}
    return make_config(esl=EslConfig(**esl))  # type: ignore[arg-type]


# --- who may connect ---------------------------------------------------------------------------


def test_by_default_only_loopback_may_connect() -> None:
    assert EslConfig().allow == ("127.0.0.0/8", "::1/128")


@pytest.mark.parametrize("config", [_esl(allow=("127.0.0.1/32",))])
async def test_a_peer_outside_the_allow_list_is_closed_before_anything_is_said(
    gateway: Gateway,
    simulator: FreeSwitchSimulator,
    stubs: Stubs,
    events: Subscription,
    config: GatewayConfig,
) -> None:
    stranger = await RawPeer.open(esl_address(gateway), source_host="127.0.0.2")
    assert await stranger.wait_closed_by_gateway() == b""  # not even `connect`

    call = await connected(simulator, events)  # from 127.0.0.1: allowed
    await answer_succeeds(stubs, events, call.uuid)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("config", [_esl(allow=("127.0.0.1/32",))])
async def test_a_storm_of_refused_peers_is_one_log_line_not_one_each(
    gateway: Gateway,
    simulator: FreeSwitchSimulator,
    stubs: Stubs,
    events: Subscription,
    config: GatewayConfig,
) -> None:
    seen = _Records()
    link_log = logging.getLogger("callcontrol.esl.link")
    link_log.addHandler(seen)
    try:
        for _ in range(50):
            stranger = await RawPeer.open(esl_address(gateway), source_host="127.0.0.2")
            assert await stranger.wait_closed_by_gateway() == b""
    finally:
        link_log.removeHandler(seen)
    refusals = [r.getMessage() for r in seen.records if "refused" in r.getMessage()]
    assert len(refusals) == 1  # one line per interval, each gateway its own
    assert "127.0.0.2" in refusals[0]

    call = await connected(simulator, events)  # the storm harmed nobody
    await answer_succeeds(stubs, events, call.uuid)


def test_refusals_after_a_quiet_interval_are_logged_again_with_the_count_of_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    refusals = RefusalLog(interval_s=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="callcontrol.esl.link"):
        for _ in range(5):
            refusals.log("192.0.2.7", "not in esl.allow")
        now[0] = 10.0
        refusals.log("192.0.2.8", "not in esl.allow")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "outbound socket from 192.0.2.7 refused: not in esl.allow",
        "outbound socket from 192.0.2.8 refused: not in esl.allow (4 more refused since the last such line)",
    ]


@pytest.mark.parametrize("config", [_esl(allow=("127.0.0.2/32", "::1/128"))])
async def test_a_peer_inside_the_allow_list_is_served(
    gateway: Gateway, stubs: Stubs, events: Subscription, config: GatewayConfig
) -> None:
    peer = await raw_connected(gateway, events, source_host="127.0.0.2")
    stranger = await RawPeer.open(esl_address(gateway), source_host="127.0.0.1")
    assert await stranger.wait_closed_by_gateway() == b""
    peer.abort()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
@pytest.mark.parametrize("config", [make_config(esl=EslConfig(listen=Address("::1", 0)))])
async def test_an_ipv6_listener_serves_freeswitch_on_ipv6_loopback(
    gateway: Gateway, stubs: Stubs, events: Subscription, config: GatewayConfig
) -> None:
    address = esl_address(gateway)
    assert address.host == "::1"
    sim = FreeSwitchSimulator(address.host, address.port)
    try:
        call = await connected(sim, events)
        await answer_succeeds(stubs, events, call.uuid)
    finally:
        await sim.close()


# --- how many, how big, how slow ---------------------------------------------------------------


@pytest.mark.parametrize("config", [_esl(max_connections=2)])
async def test_a_connection_over_max_connections_is_closed_at_once_and_its_call_goes_on(
    gateway: Gateway,
    simulator: FreeSwitchSimulator,
    stubs: Stubs,
    events: Subscription,
    config: GatewayConfig,
) -> None:
    kept = [await connected(simulator, events) for _ in range(2)]

    over = await simulator.place_call()
    await over.wait_closed()  # closed, not parked in the listen backlog
    assert over.returned_to_dialplan.is_set()  # FreeSWITCH goes on with the dialplan
    assert over.commands == []

    await kept[0].drop_socket()
    assert (await next_event(events, CallHangup, kept[0].uuid)).reason == "connection_lost"
    later = await connected(simulator, events)  # a slot is free again
    await answer_succeeds(stubs, events, later.uuid)
    await answer_succeeds(stubs, events, kept[1].uuid)


@pytest.mark.parametrize("config", [_esl(max_frame_bytes=64 * 1024)])
async def test_a_frame_announcing_more_than_max_frame_bytes_closes_that_socket_only(
    gateway: Gateway,
    simulator: FreeSwitchSimulator,
    stubs: Stubs,
    events: Subscription,
    config: GatewayConfig,
) -> None:
    other = await connected(simulator, events)
    peer = await raw_connected(gateway, events)

    peer.send(b"Content-Length: 10000000\nContent-Type: text/event-plain\n\n" + b"x" * 1000)
    await peer.wait_closed_by_gateway()
    hangup = await next_event(events, CallHangup, peer.uuid)
    assert (hangup.cause, hangup.reason) == ("UNKNOWN", "connection_lost")
    await answer_succeeds(stubs, events, other.uuid)


@pytest.mark.parametrize("config", [_esl(max_frame_bytes=64 * 1024)])
async def test_a_header_block_longer_than_max_frame_bytes_closes_the_socket(
    gateway: Gateway, events: Subscription, config: GatewayConfig
) -> None:
    peer = await raw_connected(gateway, events)
    peer.send(b"X-Endless: " + b"a" * (70 * 1024))
    await peer.wait_closed_by_gateway()
    assert (await next_event(events, CallHangup, peer.uuid)).reason == "connection_lost"


@pytest.mark.parametrize("config", [_esl(partial_frame_timeout_ms=300)])
@pytest.mark.parametrize("trickle", [False, True], ids=["stalled", "trickling"])
async def test_a_frame_left_unfinished_past_the_partial_frame_timeout_closes_that_socket_only(
    gateway: Gateway,
    simulator: FreeSwitchSimulator,
    stubs: Stubs,
    events: Subscription,
    config: GatewayConfig,
    trickle: bool,
) -> None:
    other = await connected(simulator, events)
    peer = await raw_connected(gateway, events)
    frame = peer.event("CHANNEL_ANSWER")
    peer.send(frame[:100])

    async def dribble() -> None:
        # One more byte every 50 ms: each arrives well within the timeout, the frame never does.
        for i in range(100, len(frame) - 1):
            await asyncio.sleep(0.05)
            peer.send(frame[i : i + 1])

    task = asyncio.create_task(dribble()) if trickle else None
    try:
        await peer.wait_closed_by_gateway(timeout=5.0)
    finally:
        if task is not None:
            task.cancel()
    hangup = await next_event(events, CallHangup, peer.uuid)
    assert (hangup.cause, hangup.reason) == ("UNKNOWN", "connection_lost")
    await answer_succeeds(stubs, events, other.uuid)


@pytest.mark.parametrize("config", [_esl(reply_timeout_ms=300)])
@pytest.mark.parametrize("answers", [0, 1, 2], ids=["silent", "after-connect", "after-myevents"])
async def test_a_peer_that_never_finishes_set_up_is_closed_after_the_reply_timeout(
    gateway: Gateway, events: Subscription, config: GatewayConfig, answers: int
) -> None:
    peer = await RawPeer.open(esl_address(gateway))
    if answers >= 1:
        await peer.expect("connect")
        peer.send(b"Content-Type: command/reply\nReply-Text: +OK\nUnique-ID: " + peer.uuid.encode() + b"\n\n")
    if answers >= 2:
        await peer.expect("myevents")
        peer.send(encode_reply("+OK Events Enabled"))
    await peer.wait_closed_by_gateway(timeout=5.0)
    assert not [e for e in drain(events) if isinstance(e, CallInitiated)]


async def test_what_came_before_a_bad_frame_still_counts(gateway: Gateway, events: Subscription) -> None:
    peer = await raw_connected(gateway, events)
    busy = (("Hangup-Cause", "USER_BUSY"),)
    # The hangup and the garbage after it arrive in one read.
    peer.send(peer.event("CHANNEL_HANGUP_COMPLETE", leading=busy) + b"not a header line\n\n")
    await peer.wait_closed_by_gateway()
    assert (await next_event(events, CallHangup, peer.uuid)).cause == "USER_BUSY"
