"""Any replica answers any request: forwarded to the replica holding the call, answered as there."""

from __future__ import annotations

import asyncio
import socket

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from callcontrol.cluster.directory import Directory, SessionEntry
from callcontrol.cluster.membership import Membership
from callcontrol.cluster.store import connect
from callcontrol.config import ClusterConfig
from callcontrol.events import CallInitiated, CommandResult
from callcontrol.gateway import Gateway
from callcontrol.simulator import FreeSwitchSimulator, SimulatedCall
from callcontrol.startup import StartupError
from callcontrol.v1 import commands_pb2, operations_pb2, sessions_pb2
from callcontrol.webhooks.outbox import OutboxError
from tests.cluster.conftest import Replica, StartReplica
from tests.conftest import DEMO_AUTH, OTHER_AUTH, make_config, next_event
from tests.redis_server import RedisServer


async def _call_on(switch: FreeSwitchSimulator, replica: Replica, **kwargs: object) -> SimulatedCall:
    with replica.gateway.events.subscribe() as events:
        call = await switch.place_call(gateway=replica.esl, **kwargs)  # type: ignore[arg-type]
        await next_event(events, CallInitiated, call.uuid)
    return call


def _reason(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    raise AssertionError("no ErrorInfo")


def _sendmsgs(call: SimulatedCall, command: str) -> list[object]:
    return [
        c for c in call.commands if c.line.startswith("sendmsg") and c.headers.get("call-command") == command
    ]


async def test_a_command_on_every_replica_reaches_the_owner(
    start_replica: StartReplica, switch: FreeSwitchSimulator
) -> None:
    r1, r2, r3 = [await start_replica(name) for name in ("r1", "r2", "r3")]
    call = await _call_on(switch, r1)

    with r1.gateway.events.subscribe() as events:
        envelope = await r2.stubs.commands.Answer(
            commands_pb2.AnswerRequest(session_id=call.uuid), metadata=DEMO_AUTH
        )
        result = await next_event(events, CommandResult, call.uuid)
    assert (result.operation_id, result.status) == (envelope.operation_id, "succeeded")
    assert envelope.status == "in_progress"

    # Reads and watches of the operation from every replica give the owner's answer.
    for replica in (r1, r2, r3):
        op = await replica.stubs.operations.GetOperation(
            operations_pb2.GetOperationRequest(operation_id=envelope.operation_id), metadata=DEMO_AUTH
        )
        assert (op.operation_id, op.status) == (envelope.operation_id, "succeeded")
        watched = [
            o.status
            async for o in replica.stubs.operations.WatchOperation(
                operations_pb2.WatchOperationRequest(operation_id=envelope.operation_id), metadata=DEMO_AUTH
            )
        ]
        assert watched == ["succeeded"]
        session = await replica.stubs.sessions.GetSession(
            sessions_pb2.GetSessionRequest(session_id=call.uuid), metadata=DEMO_AUTH
        )
        assert (session.session_id, session.state) == (call.uuid, "answered")
    # Each replica forwarded to r1, which sent the one answer.
    assert len(_sendmsgs(call, "execute")) == 1


async def test_a_watch_through_another_replica_follows_the_operation_to_its_end(
    start_replica: StartReplica, switch: FreeSwitchSimulator
) -> None:
    r1, r2 = await start_replica("r1"), await start_replica("r2")
    # The answer is queued but never completes: the watch sees in_progress, then the timeout.
    call = await _call_on(switch, r1, answer_completes=False)
    envelope = await r2.stubs.commands.Answer(
        commands_pb2.AnswerRequest(session_id=call.uuid), metadata=DEMO_AUTH
    )
    watch = r2.stubs.operations.WatchOperation(
        operations_pb2.WatchOperationRequest(operation_id=envelope.operation_id), metadata=DEMO_AUTH
    )
    statuses = [op.status async for op in watch]
    assert statuses == ["in_progress", "timed_out"]


async def test_idempotent_repeats_through_different_replicas_send_once(
    start_replica: StartReplica, switch: FreeSwitchSimulator
) -> None:
    r1, r2, r3 = [await start_replica(name) for name in ("r1", "r2", "r3")]
    call = await _call_on(switch, r1)
    request = commands_pb2.HangupRequest(session_id=call.uuid, command_uid="once-only", cause="USER_BUSY")

    envelopes = [await r.stubs.commands.Hangup(request, metadata=DEMO_AUTH) for r in (r2, r3, r1, r2)]

    assert len({e.operation_id for e in envelopes}) == 1
    await asyncio.wait_for(call.hung_up.wait(), 5)
    assert len(_sendmsgs(call, "hangup")) == 1


async def test_errors_through_another_replica_are_the_owners(
    start_replica: StartReplica, switch: FreeSwitchSimulator
) -> None:
    r1, r2 = await start_replica("r1"), await start_replica("r2")
    call = await _call_on(switch, r1)

    # Another application's call: not found, wherever asked.
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await r2.stubs.commands.Answer(commands_pb2.AnswerRequest(session_id=call.uuid), metadata=OTHER_AUTH)
    assert other.value.code() is grpc.StatusCode.NOT_FOUND

    await r2.stubs.commands.Disconnect(
        commands_pb2.DisconnectRequest(session_id=call.uuid), metadata=DEMO_AUTH
    )
    await call.returned_to_dialplan.wait()
    # Asked through r2, answered by r1 (which knows why): the same status and details.
    answers = []
    for replica in (r1, r2):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await replica.stubs.commands.Answer(
                commands_pb2.AnswerRequest(session_id=call.uuid), metadata=DEMO_AUTH
            )
        answers.append((refused.value.code(), refused.value.details(), _reason(refused.value)))
    assert answers[0] == answers[1]
    assert answers[0][0] is grpc.StatusCode.FAILED_PRECONDITION
    assert answers[0][2] == "SESSION_DISCONNECTED"


async def test_list_sessions_pages_over_every_replica(
    start_replica: StartReplica, switch: FreeSwitchSimulator
) -> None:
    r1, r2, r3 = [await start_replica(name) for name in ("r1", "r2", "r3")]
    calls = [await _call_on(switch, r) for r in (r1, r1, r2, r3, r2)]
    await _call_on(switch, r1, app_id="other-app")

    seen: list[str] = []
    token = ""
    while True:
        page = await r3.stubs.sessions.ListSessions(
            sessions_pb2.ListSessionsRequest(page_size=2, page_token=token), metadata=DEMO_AUTH
        )
        assert len(page.sessions) <= 2
        seen += [s.session_id for s in page.sessions]
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(c.uuid for c in calls)


async def test_an_owner_that_is_not_live_is_unavailable_with_a_reason(
    start_replica: StartReplica, redis_server: RedisServer
) -> None:
    r1 = await start_replica("r1")
    client = connect(redis_server.url, 1.0)
    try:
        directory = Directory(client)
        gone = "11111111-1111-4111-8111-111111111111"
        await directory.put_session(SessionEntry(gone, owner="ghost", app_id="demo-app", state="answered"))
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await r1.stubs.commands.Answer(commands_pb2.AnswerRequest(session_id=gone), metadata=DEMO_AUTH)
        assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
        assert _reason(failed.value) == "OWNER_UNAVAILABLE"
        assert "ghost" in (failed.value.details() or "")

        # Registered, but nothing answers at its address: a deadline, then a clear reason.
        silent = "22222222-2222-4222-8222-222222222222"
        await Membership(client, "silent", 5000).beat("127.0.0.1:1")
        await directory.put_session(SessionEntry(silent, owner="silent", app_id="demo-app", state="ringing"))
        with pytest.raises(grpc.aio.AioRpcError) as unreachable:
            await r1.stubs.commands.Answer(commands_pb2.AnswerRequest(session_id=silent), metadata=DEMO_AUTH)
        assert unreachable.value.code() is grpc.StatusCode.UNAVAILABLE
        assert _reason(unreachable.value) == "OWNER_UNREACHABLE"
    finally:
        await client.aclose()


async def test_a_dead_replicas_entries_stop_routing_within_its_expiry(
    start_replica: StartReplica, switch: FreeSwitchSimulator
) -> None:
    r1, r2 = await start_replica("r1"), await start_replica("r2")
    call = await _call_on(switch, r1)
    assert r1.gateway.cluster is not None
    # r1 goes silent (no leave, no more heartbeats), its socket still open.
    for task in r1.gateway.cluster._tasks:
        task.cancel()

    async def refused() -> grpc.aio.AioRpcError | None:
        try:
            await r2.stubs.sessions.GetSession(
                sessions_pb2.GetSessionRequest(session_id=call.uuid), metadata=DEMO_AUTH
            )
        except grpc.aio.AioRpcError as exc:
            return exc
        return None

    started = asyncio.get_running_loop().time()
    while (gone := await refused()) is None:
        assert asyncio.get_running_loop().time() - started < 5, "still routed to a silent replica"
        await asyncio.sleep(0.05)  # polling: the expiry happens inside Redis
    assert gone.code() is grpc.StatusCode.UNAVAILABLE
    assert _reason(gone) == "OWNER_UNAVAILABLE"


async def test_a_replica_that_cannot_reach_redis_does_not_start() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        url = f"redis://127.0.0.1:{holder.getsockname()[1]}/0"

        # The webhook outbox (Redis in cluster mode) is opened when the gateway is built, the
        # directory when it starts: either way the failure names the setting, and nothing runs.
        async def start() -> None:
            gateway = Gateway(make_config(cluster=ClusterConfig(redis_url=url, replica_id="blind")))
            await gateway.start()

        with pytest.raises((StartupError, OutboxError)) as failed:
            await start()
    assert str(failed.value).startswith("cluster.redis_url: ")
    assert "unavailable" in str(failed.value) or "unreachable" in str(failed.value)
