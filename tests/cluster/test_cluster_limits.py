"""Rate limits per application across the cluster, not per replica."""

from __future__ import annotations

import grpc
import pytest

from callcontrol.config import LimitsConfig
from callcontrol.simulator import FreeSwitchSimulator
from callcontrol.v1 import sessions_pb2
from tests.cluster.conftest import StartReplica
from tests.cluster.test_routing import _call_on, _reason
from tests.conftest import DEMO_AUTH, OTHER_AUTH

ONE_PER_S = LimitsConfig(rate_limit_per_s=1, auth_failures_per_minute=0)


async def test_one_budget_per_application_across_replicas_and_a_forwarded_request_counts_once(
    start_replica: StartReplica, switch: FreeSwitchSimulator
) -> None:
    r1 = await start_replica("r1", limits=ONE_PER_S)
    r2 = await start_replica("r2", limits=ONE_PER_S)
    call = await _call_on(switch, r1)
    get = sessions_pb2.GetSessionRequest(session_id=call.uuid)

    # Through r2, answered by r1: one token of one. Counted twice, r1 would refuse it.
    session = await r2.stubs.sessions.GetSession(get, metadata=DEMO_AUTH)
    assert session.session_id == call.uuid
    # The budget is the application's, whichever replica is asked next.
    with pytest.raises(grpc.aio.AioRpcError) as limited:
        await r1.stubs.sessions.GetSession(get, metadata=DEMO_AUTH)
    assert limited.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _reason(limited.value) == "RATE_LIMITED"
    # Another application has its own budget.
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await r2.stubs.sessions.GetSession(get, metadata=OTHER_AUTH)
    assert other.value.code() is grpc.StatusCode.NOT_FOUND


async def test_a_client_cannot_pass_for_a_replica(
    start_replica: StartReplica, switch: FreeSwitchSimulator
) -> None:
    r1 = await start_replica("r1", limits=ONE_PER_S)
    r2 = await start_replica("r2", limits=ONE_PER_S)
    call = await _call_on(switch, r1)
    forged = (*DEMO_AUTH, ("x-callcontrol-forwarded", "guess"))
    get = sessions_pb2.GetSessionRequest(session_id=call.uuid)

    # Not taken for a forwarded request: routed as usual, and counted.
    assert (await r2.stubs.sessions.GetSession(get, metadata=forged)).session_id == call.uuid
    with pytest.raises(grpc.aio.AioRpcError) as limited:
        await r2.stubs.sessions.GetSession(get, metadata=forged)
    assert limited.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
