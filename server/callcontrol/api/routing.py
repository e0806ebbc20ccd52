"""What the servicers ask before serving a request for a call this replica does not hold.

A single gateway has no router: every request is served locally, as always. In
cluster mode (``callcontrol.cluster.node``) a request whose session or operation
is unknown here is sent to the replica that holds it, and answered from there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol, TypeAlias

import grpc
from google.protobuf.message import Message

from callcontrol.operations import Operation
from callcontrol.v1 import sessions_pb2

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class Router(Protocol):
    def forwarded(self, context: Context) -> bool:
        """Whether another replica sent this request (it is then never sent on)."""

    async def session_owner(self, app_id: str, session_id: str) -> str | None:
        """The address of the live replica holding the app's session; None if no other does."""

    async def operation_owner(self, app_id: str, operation_id: str) -> str | None:
        """The address of the live replica holding the operation; None if no other does."""

    async def operation_started(self, op: Operation) -> None:
        """Make a new local operation findable from every replica."""

    async def disconnecting(self, app_id: str, session_id: str) -> None:
        """Before ``exit`` goes out for a call held here: mark it let go for every replica."""

    async def forward(
        self, address: str, method: str, request: Message, response_type: type[Message], context: Context
    ) -> Any: ...

    def forward_stream(
        self, address: str, method: str, request: Message, response_type: type[Message], context: Context
    ) -> AsyncIterator[Any]: ...

    async def page(
        self, app_id: str, page_size: int, page_token: str, context: Context
    ) -> sessions_pb2.ListSessionsResponse:
        """ListSessions across every live replica."""
