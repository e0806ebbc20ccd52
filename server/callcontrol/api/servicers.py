"""Thin gRPC servicers: validate, call the domain (or the replica holding the call), convert.

Authentication and error mapping happen in ``interceptors``; the caller is
``current_app()``. With a ``Router`` (cluster mode) a request whose session or
operation is not held here goes to the replica that holds it; without one every
request is served here, as a single gateway always has.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeAlias

import grpc
from google.protobuf.message import Message

from callcontrol import validation as v
from callcontrol.api import convert
from callcontrol.api.identity import current_app
from callcontrol.api.routing import Router
from callcontrol.control import CallControl
from callcontrol.errors import NotFound
from callcontrol.operations import Operation
from callcontrol.v1 import (
    commands_pb2,
    commands_pb2_grpc,
    operations_pb2,
    operations_pb2_grpc,
    sessions_pb2,
    sessions_pb2_grpc,
)

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

_COMMANDS = "/" + commands_pb2.DESCRIPTOR.services_by_name["SessionCommands"].full_name
_OPERATIONS = "/" + operations_pb2.DESCRIPTOR.services_by_name["Operations"].full_name
_SESSIONS = "/" + sessions_pb2.DESCRIPTOR.services_by_name["Sessions"].full_name


def _command_uid(value: str) -> str:
    return value or str(uuid.uuid4())


class SessionCommandsServicer(commands_pb2_grpc.SessionCommandsServicer):
    def __init__(self, control: CallControl, router: Router | None = None) -> None:
        self._control = control
        self._router = router

    async def _run(
        self, name: str, request: Message, context: Context, session_id: str, command: Callable[[], Operation]
    ) -> commands_pb2.OperationEnvelope:
        try:
            op = command()
        except NotFound:
            # Not held here: the replica that holds the call answers, idempotency and all.
            router = self._router
            if router is None or router.forwarded(context):
                raise
            owner = await router.session_owner(current_app().app_id, session_id)
            if owner is None:
                raise
            reply: commands_pb2.OperationEnvelope = await router.forward(
                owner, f"{_COMMANDS}/{name}", request, commands_pb2.OperationEnvelope, context
            )
            return reply
        if self._router is not None:
            await self._router.operation_started(op)
        return convert.envelope(op)

    async def Answer(
        self, request: commands_pb2.AnswerRequest, context: Context
    ) -> commands_pb2.OperationEnvelope:
        v.check(v.session_id_violation(request.session_id), v.command_uid_violation(request.command_uid))
        app_id, session_id = current_app().app_id, v.canonical_uuid(request.session_id)
        uid = _command_uid(request.command_uid)
        return await self._run(
            "Answer", request, context, session_id, lambda: self._control.answer(app_id, session_id, uid)
        )

    async def Hangup(
        self, request: commands_pb2.HangupRequest, context: Context
    ) -> commands_pb2.OperationEnvelope:
        v.check(
            v.session_id_violation(request.session_id),
            v.command_uid_violation(request.command_uid),
            v.cause_violation(request.cause),
        )
        app_id, session_id = current_app().app_id, v.canonical_uuid(request.session_id)
        uid, cause = _command_uid(request.command_uid), request.cause or v.DEFAULT_CAUSE
        return await self._run(
            "Hangup",
            request,
            context,
            session_id,
            lambda: self._control.hangup(app_id, session_id, uid, cause),
        )

    async def Disconnect(
        self, request: commands_pb2.DisconnectRequest, context: Context
    ) -> commands_pb2.OperationEnvelope:
        v.check(v.session_id_violation(request.session_id), v.command_uid_violation(request.command_uid))
        app_id, session_id = current_app().app_id, v.canonical_uuid(request.session_id)
        uid = _command_uid(request.command_uid)
        if self._router is not None:
            await self._router.disconnecting(app_id, session_id)
        return await self._run(
            "Disconnect",
            request,
            context,
            session_id,
            lambda: self._control.disconnect(app_id, session_id, uid),
        )


class OperationsServicer(operations_pb2_grpc.OperationsServicer):
    def __init__(self, control: CallControl, router: Router | None = None) -> None:
        self._control = control
        self._router = router

    async def _owner(self, context: Context, operation_id: str) -> str | None:
        """Where to send a request for an operation not held here; None: answer here."""
        router = self._router
        if router is None or router.forwarded(context):
            return None
        return await router.operation_owner(current_app().app_id, operation_id)

    async def GetOperation(
        self, request: operations_pb2.GetOperationRequest, context: Context
    ) -> operations_pb2.Operation:
        v.check(v.operation_id_violation(request.operation_id))
        operation_id = v.canonical_uuid(request.operation_id)
        try:
            op = self._control.operations.get(current_app().app_id, operation_id)
        except NotFound:
            owner = await self._owner(context, operation_id)
            if owner is None or self._router is None:
                raise
            reply: operations_pb2.Operation = await self._router.forward(
                owner, f"{_OPERATIONS}/GetOperation", request, operations_pb2.Operation, context
            )
            return reply
        return convert.operation(op)

    async def WatchOperation(
        self, request: operations_pb2.WatchOperationRequest, context: Context
    ) -> AsyncIterator[operations_pb2.Operation]:
        v.check(v.operation_id_violation(request.operation_id))
        app_id, operation_id = current_app().app_id, v.canonical_uuid(request.operation_id)
        try:
            self._control.operations.get(app_id, operation_id)
        except NotFound:
            owner = await self._owner(context, operation_id)
            if owner is None or self._router is None:
                raise
            async for item in self._router.forward_stream(
                owner, f"{_OPERATIONS}/WatchOperation", request, operations_pb2.Operation, context
            ):
                yield item
            return
        async for op in self._control.operations.watch(app_id, operation_id):
            yield convert.operation(op)


class SessionsServicer(sessions_pb2_grpc.SessionsServicer):
    def __init__(self, control: CallControl, router: Router | None = None) -> None:
        self._control = control
        self._router = router

    async def GetSession(
        self, request: sessions_pb2.GetSessionRequest, context: Context
    ) -> sessions_pb2.Session:
        v.check(v.session_id_violation(request.session_id))
        app_id, session_id = current_app().app_id, v.canonical_uuid(request.session_id)
        try:
            session = self._control.sessions.lookup(app_id, session_id)
        except NotFound:
            router = self._router
            if router is None or router.forwarded(context):
                raise
            owner = await router.session_owner(app_id, session_id)
            if owner is None:
                raise
            reply: sessions_pb2.Session = await router.forward(
                owner, f"{_SESSIONS}/GetSession", request, sessions_pb2.Session, context
            )
            return reply
        return convert.session(session)

    async def ListSessions(
        self, request: sessions_pb2.ListSessionsRequest, context: Context
    ) -> sessions_pb2.ListSessionsResponse:
        size = v.page_size(request.page_size)
        app_id = current_app().app_id
        if self._router is not None and not self._router.forwarded(context):
            return await self._router.page(app_id, size, request.page_token, context)
        sessions, token = self._control.sessions.page(app_id, size, request.page_token)
        return sessions_pb2.ListSessionsResponse(
            sessions=[convert.session(s) for s in sessions], next_page_token=token
        )
