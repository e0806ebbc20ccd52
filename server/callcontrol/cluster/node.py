"""This replica in the cluster: registration, the directory's upkeep, routing and admission.

* Membership: a heartbeat task re-registers the replica every ``heartbeat_ms``;
  while Redis cannot be reached the replica lets new calls go and refuses
  requests for calls held elsewhere (UNAVAILABLE, ``cluster_store_unavailable``)
  rather than guess; calls it holds keep working. When Redis is back it
  registers again and re-records the calls it holds.
* Directory: a new socket is recorded (or adopted, or let go) before the call is
  announced; later changes (answered, hung up) follow through the event stream.
* Routing (``callcontrol.api.routing.Router``): who holds a session or operation
  held elsewhere, forwarding, ListSessions over every live replica.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import Message
from redis.exceptions import RedisError

from callcontrol.api import convert
from callcontrol.api.routing import Context
from callcontrol.cluster.directory import Directory, InFlight, SessionEntry
from callcontrol.cluster.forwarding import Forwarder, marked
from callcontrol.cluster.membership import Membership
from callcontrol.cluster.ratelimit import ClusterRateLimiter
from callcontrol.cluster.store import PREFIX, STORE_UNAVAILABLE, checked, connect, stop_if_cancelled, text
from callcontrol.config import GatewayConfig
from callcontrol.control import Admission, CallControl
from callcontrol.errors import NotFound, Unavailable
from callcontrol.events import CallAnswered, CallHangup, CommandResult, LifecycleEvent
from callcontrol.operations import Operation
from callcontrol.sessions import Session, SessionState
from callcontrol.v1 import sessions_pb2

log = logging.getLogger(__name__)

OWNER_GONE = "owner_unavailable"
REPLICA_LOST = "replica_lost"
_LIST_SESSIONS = "/" + sessions_pb2.DESCRIPTOR.services_by_name["Sessions"].full_name + "/ListSessions"
_ALL = 2**31  # "every live session" for a re-record


class ClusterNode:
    def __init__(self, config: GatewayConfig, replica_id: str, control: CallControl) -> None:
        cluster = config.cluster
        self.replica_id = replica_id
        self._config = config
        self._control = control
        self._heartbeat_s = cluster.heartbeat_ms / 1000
        # A Redis call waits at most this long: an outage fails requests, it does not hang them.
        self._redis = connect(cluster.redis_url, timeout_s=max(0.5, cluster.expiry_ms / 2000))
        self.membership = Membership(self._redis, replica_id, cluster.expiry_ms)
        self.directory = Directory(self._redis)
        self.in_flight = InFlight(self._redis)
        self._forwarder = Forwarder(cluster.forward_timeout_ms / 1000)
        self._address = ""
        # Directory updates go out one at a time, in the order the events came.
        self._write_lock = asyncio.Lock()
        self._writing: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        #: Redis answered the last heartbeat
        self.store_ok = True
        self._refreshed_at = 0.0  # when the live directory entries of held calls were last refreshed
        self._redis_run = ""  # Redis's run id at the last heartbeat: another one means it restarted

    def rate_limiter(self, per_s: int, groups: Mapping[str, str]) -> ClusterRateLimiter:
        """Limits counted in Redis, across the replicas."""
        return ClusterRateLimiter(self._redis, per_s, groups)

    # -- lifecycle -------------------------------------------------------------
    async def start(self, address: str) -> None:
        """Register (Redis must answer now: a replica does not start blind), then keep beating."""
        self._address = address
        self._redis_run = await checked(self.membership.beat(address))
        self._forwarder.secret = await checked(self._shared_secret())
        log.info("cluster replica %s registered at %s", self.replica_id, address)
        self._refreshed_at = time.monotonic()
        self._tasks = [asyncio.create_task(self._heartbeat(), name="cluster-heartbeat")]

    async def _shared_secret(self, mine: str = "") -> str:
        """The replicas' forwarding secret: the one in Redis, or ours (or a new one) if it has none."""
        key = PREFIX + "forwarding-secret"
        await self._redis.set(key, mine or secrets.token_urlsafe(32), nx=True)
        return text(await self._redis.get(key)) or ""

    async def release(self) -> None:
        """Before a graceful stop lets its calls go: their operations end here, reported here.

        So the replica adopting a call finds none of them to fail a second time.
        """
        for session in self._held():
            with contextlib.suppress(RedisError, OSError):
                await self.in_flight.take(session.session_id, datetime.now(UTC), "", "")

    async def shutdown(self) -> None:
        self._tasks += self._writing
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._address:
            with contextlib.suppress(RedisError, OSError, TimeoutError):  # else it expires by itself
                await asyncio.wait_for(self.membership.leave(), self._heartbeat_s + 1)
        await self._forwarder.close()
        await self._redis.aclose()

    async def _heartbeat(self) -> None:
        while True:
            stop_if_cancelled()
            await asyncio.sleep(self._heartbeat_s)
            try:
                run = await self.membership.beat(self._address)
            except (RedisError, OSError) as exc:
                if self.store_ok:
                    log.error(
                        "cluster store (Redis) lost: %s; new calls are let go and requests for calls "
                        "held elsewhere fail UNAVAILABLE until it is back",
                        type(exc).__name__,
                    )
                self.store_ok = False
                continue
            restarted = run != self._redis_run
            if not self.store_ok or restarted:
                # A restart may have lost the last writes (fsync everysec, a failover): write
                # back what this replica knows, even if no heartbeat fell in the gap.
                recorded = await self._rerecord()
                self.store_ok = True
                self._redis_run = run
                self._refreshed_at = time.monotonic()
                log.warning(
                    "cluster store (Redis) is back%s: replica %s registered again, %d held calls re-recorded",
                    " (it restarted)" if restarted else "",
                    self.replica_id,
                    recorded,
                )
            elif time.monotonic() - self._refreshed_at >= self._refresh_every:
                await self._refresh()

    @property
    def _refresh_every(self) -> float:
        # Several refreshes per TTL: one lost to a short outage leaves the entries standing.
        return self.directory.live_ttl_s / 4

    async def _refresh(self) -> None:
        """Keep the directory entries of the calls held here from expiring, however long they last."""
        held = [s.session_id for s in self._held()]
        try:
            await self.directory.refresh(self.replica_id, held)
        except (RedisError, OSError) as exc:
            log.warning(
                "directory entries of held calls not refreshed (next heartbeat): %s", type(exc).__name__
            )
            return
        self._refreshed_at = time.monotonic()

    def _held(self) -> list[Session]:
        return [
            s
            for app in self._config.applications
            for s in self._control.sessions.page(app.app_id, _ALL, "")[0]
        ]

    async def _rerecord(self) -> int:
        """Record every call held here again (Redis may have lost writes while it was away)."""
        with contextlib.suppress(RedisError, OSError):
            # Lost with the rest, the next replica to start would pick a secret of its own.
            self._forwarder.secret = await self._shared_secret(self._forwarder.secret)
        count = 0
        for session in self._held():
            try:
                count += await self.directory.put_session(self._entry(session))
            except (RedisError, OSError):
                return count
        return count

    # -- directory upkeep (an EventSink) ----------------------------------------
    def emit(self, event: LifecycleEvent) -> None:
        if isinstance(event, CommandResult):
            self._spawn_write(lambda: self.in_flight.finished(event.session_id, event.operation_id))
            return
        if not isinstance(event, CallAnswered | CallHangup):
            return
        session = self._control.sessions.live(event.session_id)
        if session is None:
            return
        entry = self._entry(session)
        if isinstance(event, CallHangup):
            entry = replace(entry, state=SessionState.HANGUP.value)
        self._spawn_write(lambda: self.directory.put_session(entry))

    def _spawn_write(self, write: Callable[[], Awaitable[object]]) -> None:
        task = asyncio.get_running_loop().create_task(self._write(write))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _write(self, write: Callable[[], Awaitable[object]]) -> None:
        async with self._write_lock:  # FIFO: tasks reach it in the order they were made
            if not self.store_ok:
                return  # live calls are re-recorded when Redis is back
            try:
                await write()
            except (RedisError, OSError) as exc:
                log.warning("directory update lost: %s", type(exc).__name__)

    def _entry(self, session: Session) -> SessionEntry:
        return SessionEntry(
            session_id=session.session_id,
            owner=self.replica_id,
            app_id=session.app_id,
            state=session.state.value,
            created_at=session.created_at,
            answered_at=session.answered_at,
            answer_reported=session.answer_reported,
        )

    # -- admission (CallControl.admit) ------------------------------------------
    async def admit(self, session: Session) -> Admission:
        """New call, adoption of a call whose replica went away, or let-go."""
        if not self.store_ok:
            return Admission(refused=STORE_UNAVAILABLE)
        try:
            return await self._admit(session)
        except (RedisError, OSError) as exc:
            return Admission(refused=f"{STORE_UNAVAILABLE} ({type(exc).__name__})")

    async def _admit(self, session: Session) -> Admission:
        found = await self.directory.session(session.session_id)
        if found is None:
            if await self.directory.put_session(self._entry(session)):
                return Admission()
            return Admission(refused="another replica holds the call")
        if found.state == SessionState.DISCONNECTED.value:
            return Admission(refused="its application disconnected it")
        if found.ended or found.app_id != session.app_id:
            return Admission(refused="the directory says the call has ended")
        answered = session.state is SessionState.ANSWERED or found.state == SessionState.ANSWERED.value
        entry = replace(
            found,
            owner=self.replica_id,
            state=SessionState.ANSWERED.value if answered else session.state.value,
            answered_at=found.answered_at or session.answered_at,
        )
        if not await self.directory.put_session(entry, taking_over_from=found.owner):
            return Admission(refused="another replica adopted the call first")
        if answered:
            session.state = SessionState.ANSWERED
        lost = await self.in_flight.take(
            session.session_id,
            datetime.now(UTC),
            REPLICA_LOST,
            f"replica {found.owner} holding the call was lost before the command completed",
        )
        for op in lost:
            await self.directory.put_operation(op.operation_id, self.replica_id)
        return Admission(
            lost_operations=tuple(lost),
            adopted_from=found.owner,
            created_at=found.created_at,
            answered_at=entry.answered_at,
            answer_reported=found.answer_reported,
        )

    # -- routing (callcontrol.api.routing.Router) ---------------------------------
    def forwarded(self, context: Context) -> bool:
        metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        return self.forwarded_metadata(metadata)

    def forwarded_metadata(self, metadata: Mapping[str, str]) -> bool:
        return marked(metadata, self._forwarder.secret)

    def _require_store(self) -> None:
        if not self.store_ok:
            raise Unavailable("the cluster store (Redis) is unavailable", reason=STORE_UNAVAILABLE)

    async def _address_of(self, owner: str, what: str) -> str | None:
        if owner == self.replica_id:
            return None
        address = await checked(self.membership.address(owner))
        if address is None:
            raise Unavailable(f"{what} is held by replica {owner}, which is not live", reason=OWNER_GONE)
        return address

    async def session_owner(self, app_id: str, session_id: str) -> str | None:
        self._require_store()
        entry = await checked(self.directory.session(session_id))
        if entry is None or entry.app_id != app_id:
            return None
        return await self._address_of(entry.owner, f"session {session_id}")

    async def operation_owner(self, app_id: str, operation_id: str) -> str | None:
        self._require_store()
        owner = await checked(self.directory.operation_owner(operation_id))
        if owner is None:
            return None
        # The owner checks the application, as it would had the request landed there.
        return await self._address_of(owner, f"operation {operation_id}")

    async def operation_started(self, op: Operation) -> None:
        try:
            await self.directory.put_operation(op.operation_id, self.replica_id)
            async with self._write_lock:
                # In order with the sink's removal: an operation already over is not recorded.
                if not self._done(op):
                    await self.in_flight.started(op)
        except (RedisError, OSError) as exc:
            # The command is on its way already; only other replicas cannot find it.
            log.warning("operation %s not recorded in the cluster: %s", op.operation_id, type(exc).__name__)

    def _done(self, op: Operation) -> bool:
        try:
            return self._control.operations.get(op.app_id, op.operation_id).done
        except NotFound:
            return True  # finished and evicted already

    async def disconnecting(self, app_id: str, session_id: str) -> None:
        session = self._control.sessions.live(session_id)
        if session is None or session.app_id != app_id or not session.accepts_commands:
            return
        # Written before `exit` goes out: the next `socket` of the dialplan must find it.
        self._require_store()
        tombstone = replace(self._entry(session), state=SessionState.DISCONNECTED.value)
        if not await checked(self.directory.put_session(tombstone)):
            raise Unavailable(f"session {session_id} is held by another replica", reason=OWNER_GONE)

    async def forward(
        self, address: str, method: str, request: Message, response_type: type[Message], context: Context
    ) -> Any:
        return await self._forwarder.unary(address, method, request, response_type, context)

    def forward_stream(
        self, address: str, method: str, request: Message, response_type: type[Message], context: Context
    ) -> AsyncIterator[Any]:
        return self._forwarder.stream(address, method, request, response_type, context)

    async def page(
        self, app_id: str, page_size: int, page_token: str, context: Context
    ) -> sessions_pb2.ListSessionsResponse:
        """One page over every live replica: each gives its page after the token's id; merged by id."""
        mine, more = self._control.sessions.page(app_id, page_size, page_token)  # checks the token
        self._require_store()
        replicas = await checked(self.membership.live())
        request = sessions_pb2.ListSessionsRequest(page_size=page_size, page_token=page_token)
        others = [a for r, a in replicas.items() if r != self.replica_id]
        replies: list[sessions_pb2.ListSessionsResponse] = await asyncio.gather(
            *(
                self.forward(a, _LIST_SESSIONS, request, sessions_pb2.ListSessionsResponse, context)
                for a in others
            )
        )
        merged = sorted(
            [*(convert.session(s) for s in mine), *(s for r in replies for s in r.sessions)],
            key=lambda s: s.session_id,
        )
        chunk = merged[:page_size]
        token = ""
        if chunk and (len(merged) > page_size or more or any(r.next_page_token for r in replies)):
            token = base64.urlsafe_b64encode(chunk[-1].session_id.encode()).decode()
        return sessions_pb2.ListSessionsResponse(sessions=chunk, next_page_token=token)
