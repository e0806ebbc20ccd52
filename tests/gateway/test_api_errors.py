"""Validation and authentication: refused with a precise status, nothing sent to FreeSWITCH."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from callcontrol.config import GatewayConfig, LimitsConfig
from callcontrol.events import CallInitiated, Subscription
from callcontrol.simulator import FreeSwitchSimulator
from callcontrol.v1 import commands_pb2, operations_pb2, sessions_pb2
from tests.conftest import DEMO_AUTH, OTHER_AUTH, Stubs, make_config, next_event


def _violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    raw = dict(err.trailing_metadata() or ())["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(raw)
    out = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.update({v.field: v.description for v in bad.field_violations})
    return out


async def _refused(rpc: Any, request: Any, metadata: Any = DEMO_AUTH) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await rpc(request, metadata=metadata)
    return err.value


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"session_id": "not-a-uuid"}, "session_id"),
        ({"session_id": ""}, "session_id"),
        ({"session_id": "6211875b2e874011b202de38598ef2ef"}, "session_id"),
        ({"command_uid": "x" * 129}, "command_uid"),
        ({"command_uid": "bad uid"}, "command_uid"),
        ({"command_uid": "a\nb"}, "command_uid"),
        ({"cause": "user_busy"}, "cause"),
        ({"cause": "NOT_A_CAUSE"}, "cause"),
        ({"cause": "USER_BUSY\nhangup-cause: CALL_REJECTED"}, "cause"),
        ({"cause": "A" * 65}, "cause"),
        ({"cause": "17"}, "cause"),
    ],
)
async def test_invalid_hangup_is_refused_naming_the_field_and_sends_nothing(
    simulator: FreeSwitchSimulator,
    stubs: Stubs,
    events: Subscription,
    request_fields: dict[str, str],
    field: str,
) -> None:
    call = await simulator.place_call()
    await next_event(events, CallInitiated, call.uuid)
    fields = {"session_id": call.uuid, **request_fields}

    err = await _refused(stubs.commands.Hangup, commands_pb2.HangupRequest(**fields))

    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in _violations(err)
    assert not [c for c in call.commands if c.line.startswith("sendmsg")]


async def test_every_violation_is_reported_at_once(stubs: Stubs) -> None:
    err = await _refused(
        stubs.commands.Hangup, commands_pb2.HangupRequest(session_id="x", command_uid="!", cause="nope")
    )
    assert set(_violations(err)) == {"session_id", "command_uid", "cause"}


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("x-app-id", "demo-app"),),
        (("x-api-key", "demo-key-change-me"),),
        (("x-app-id", "demo-app"), ("x-api-key", "wrong-key")),
        (("x-app-id", "nobody"), ("x-api-key", "demo-key-change-me")),
    ],
)
async def test_missing_or_wrong_credentials_are_unauthenticated(stubs: Stubs, metadata: Any) -> None:
    for rpc, request in (
        (
            stubs.commands.Answer,
            commands_pb2.AnswerRequest(session_id="6211875b-2e87-4011-b202-de38598ef2ef"),
        ),
        (stubs.sessions.ListSessions, sessions_pb2.ListSessionsRequest()),
        (stubs.operations.GetOperation, operations_pb2.GetOperationRequest(operation_id="x")),
    ):
        err = await _refused(rpc, request, metadata)
        assert err.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_unknown_session_is_not_found(stubs: Stubs) -> None:
    err = await _refused(
        stubs.commands.Answer, commands_pb2.AnswerRequest(session_id="6211875b-2e87-4011-b202-de38598ef2ef")
    )
    assert err.code() is grpc.StatusCode.NOT_FOUND


async def test_another_applications_session_and_operation_do_not_exist(
    simulator: FreeSwitchSimulator, stubs: Stubs, events: Subscription
) -> None:
    call = await simulator.place_call()
    await next_event(events, CallInitiated, call.uuid)
    envelope = await stubs.commands.Answer(
        commands_pb2.AnswerRequest(session_id=call.uuid), metadata=DEMO_AUTH
    )

    for rpc, request in (
        (stubs.commands.Hangup, commands_pb2.HangupRequest(session_id=call.uuid)),
        (stubs.sessions.GetSession, sessions_pb2.GetSessionRequest(session_id=call.uuid)),
        (
            stubs.operations.GetOperation,
            operations_pb2.GetOperationRequest(operation_id=envelope.operation_id),
        ),
    ):
        err = await _refused(rpc, request, OTHER_AUTH)
        assert err.code() is grpc.StatusCode.NOT_FOUND
    listed = await stubs.sessions.ListSessions(sessions_pb2.ListSessionsRequest(), metadata=OTHER_AUTH)
    assert list(listed.sessions) == []
    assert [c.line for c in call.commands if c.line.startswith("sendmsg")] == ["sendmsg"]


async def test_health_and_reflection_answer_without_credentials(channel: grpc.aio.Channel) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service="callcontrol.v1.SessionCommands"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    "config", [make_config(limits=LimitsConfig(rate_limit_per_s=3, auth_failures_per_minute=0))]
)
async def test_grpc_callers_over_the_limit_are_resource_exhausted_with_retry_info(
    stubs: Stubs, config: GatewayConfig
) -> None:
    unknown = "6211875b-2e87-4011-b202-de38598ef2ef"
    await stubs.sessions.ListSessions(sessions_pb2.ListSessionsRequest(), metadata=DEMO_AUTH)
    # Commands share the group of the other session endpoints (a refused one still counts).
    await _refused(stubs.commands.Answer, commands_pb2.AnswerRequest(session_id=unknown))
    await stubs.sessions.ListSessions(sessions_pb2.ListSessionsRequest(), metadata=DEMO_AUTH)

    err = await _refused(stubs.sessions.GetSession, sessions_pb2.GetSessionRequest(session_id=unknown))

    assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    raw = dict(err.trailing_metadata() or ())["grpc-status-details-bin"]
    details = status_pb2.Status.FromString(raw).details
    assert any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in details)
    # Another group and another application are not affected.
    other = await _refused(
        stubs.operations.GetOperation, operations_pb2.GetOperationRequest(operation_id=unknown)
    )
    assert other.code() is grpc.StatusCode.NOT_FOUND
    listed = await stubs.sessions.ListSessions(sessions_pb2.ListSessionsRequest(), metadata=OTHER_AUTH)
    assert list(listed.sessions) == []


@pytest.mark.parametrize(
    ("method", "raw", "field"),
    [
        # field 1 (session_id), length 2, bytes that are not UTF-8
        ("/callcontrol.v1.Sessions/GetSession", b"\x0a\x02\xff\xfe", "session_id"),
        # field 3 (cause) of HangupRequest
        ("/callcontrol.v1.SessionCommands/Hangup", b"\x1a\x01\xc3", "cause"),
        # not protobuf at all: a truncated length-delimited field
        ("/callcontrol.v1.Sessions/ListSessions", b"\x12\x09ab", "request"),
    ],
)
async def test_a_request_protobuf_cannot_parse_is_invalid_argument_naming_the_field(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture, method: str, raw: bytes, field: str
) -> None:
    call = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(raw, metadata=DEMO_AUTH)

    # Was INTERNAL "Exception deserializing request!" and a logged traceback.
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    raw_status = dict(err.value.trailing_metadata() or ())["grpc-status-details-bin"]
    details = status_pb2.Status.FromString(raw_status).details
    [bad_request] = [d for d in details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR)]
    violations = error_details_pb2.BadRequest()
    bad_request.Unpack(violations)
    assert [v.field for v in violations.field_violations] == [field]
    assert not [r for r in caplog.records if r.exc_info]
