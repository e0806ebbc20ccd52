"""Thin gRPC servicers: validate, call the domain, convert.

Authentication and error mapping happen in ``interceptors``; the caller is
``current_app()``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc

from callcontrol import validation as v
from callcontrol.api import convert
from callcontrol.api.identity import current_app
from callcontrol.control import CallControl
from callcontrol.v1 import (
    commands_pb2,
    commands_pb2_grpc,
    operations_pb2,
    operations_pb2_grpc,
    sessions_pb2,
    sessions_pb2_grpc,
)

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


def _command_uid(value: str) -> str:
    return value or str(uuid.uuid4())


class SessionCommandsServicer(commands_pb2_grpc.SessionCommandsServicer):
    def __init__(self, control: CallControl) -> None:
        self._control = control

    async def Answer(
        self, request: commands_pb2.AnswerRequest, context: Context
    ) -> commands_pb2.OperationEnvelope:
        v.check(v.session_id_violation(request.session_id), v.command_uid_violation(request.command_uid))
        op = self._control.answer(
            current_app().app_id, v.canonical_uuid(request.session_id), _command_uid(request.command_uid)
        )
        return convert.envelope(op)

    async def Hangup(
        self, request: commands_pb2.HangupRequest, context: Context
    ) -> commands_pb2.OperationEnvelope:
        v.check(
            v.session_id_violation(request.session_id),
            v.command_uid_violation(request.command_uid),
            v.cause_violation(request.cause),
        )
        op = self._control.hangup(
            current_app().app_id,
            v.canonical_uuid(request.session_id),
            _command_uid(request.command_uid),
            request.cause or v.DEFAULT_CAUSE,
        )
        return convert.envelope(op)

    async def Disconnect(
        self, request: commands_pb2.DisconnectRequest, context: Context
    ) -> commands_pb2.OperationEnvelope:
        v.check(v.session_id_violation(request.session_id), v.command_uid_violation(request.command_uid))
        op = self._control.disconnect(
            current_app().app_id, v.canonical_uuid(request.session_id), _command_uid(request.command_uid)
        )
        return convert.envelope(op)


class OperationsServicer(operations_pb2_grpc.OperationsServicer):
    def __init__(self, control: CallControl) -> None:
        self._control = control

    async def GetOperation(
        self, request: operations_pb2.GetOperationRequest, context: Context
    ) -> operations_pb2.Operation:
        v.check(v.operation_id_violation(request.operation_id))
        op = self._control.operations.get(current_app().app_id, v.canonical_uuid(request.operation_id))
        return convert.operation(op)

    async def WatchOperation(
        self, request: operations_pb2.WatchOperationRequest, context: Context
    ) -> AsyncIterator[operations_pb2.Operation]:
        v.check(v.operation_id_violation(request.operation_id))
        watch = self._control.operations.watch(current_app().app_id, v.canonical_uuid(request.operation_id))
        async for op in watch:
            yield convert.operation(op)


class SessionsServicer(sessions_pb2_grpc.SessionsServicer):
    def __init__(self, control: CallControl) -> None:
        self._control = control

    async def GetSession(
        self, request: sessions_pb2.GetSessionRequest, context: Context
    ) -> sessions_pb2.Session:
        v.check(v.session_id_violation(request.session_id))
        session = self._control.sessions.lookup(current_app().app_id, v.canonical_uuid(request.session_id))
        return convert.session(session)

    async def ListSessions(
        self, request: sessions_pb2.ListSessionsRequest, context: Context
    ) -> sessions_pb2.ListSessionsResponse:
        size = v.page_size(request.page_size)
        sessions, token = self._control.sessions.page(current_app().app_id, size, request.page_token)
        return sessions_pb2.ListSessionsResponse(
            sessions=[convert.session(s) for s in sessions], next_page_token=token
        )
