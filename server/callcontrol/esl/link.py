"""The outbound Event Socket link: greenswitch on its own gevent thread.

This is the one place where the gevent thread and the asyncio loop meet.

* asyncio → gevent: ``CallChannel.send`` hands an encoded frame to the gevent
  hub with ``loop.run_callback_threadsafe`` (a thread-safe wake-up, no polling).
* gevent → asyncio: everything a socket yields (replies, events, disconnect
  notices, the close) is posted with ``call_soon_threadsafe`` in the order it
  came off the wire, and delivered to the ``LinkHandler`` synchronously in
  that order. A command's reply therefore reaches the handler before any
  event that followed it on the wire, which is what keeps ``command.result``
  ahead of ``call.hangup``.

greenswitch's ``OutboundSession`` provides the session (``connect``,
``myevents``, ``linger`` and its gone-away semantics); its reader is replaced
by ``callcontrol.esl.frames`` because greenswitch percent-decodes whole frames
before splitting them (a literal ``%`` in a value is corrupted), leaves the
disconnect-notice body unread, polls its event queue once a second, and waits
for replies with no deadline.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import socket as stdlib_socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import gevent
import gevent.event
import gevent.lock
import gevent.pool
import gevent.server
import gevent.socket
from greenswitch.esl import OutboundSession, OutboundSessionHasGoneAway

from callcontrol.config import Address
from callcontrol.esl.frames import Event, Frame, FrameError, FrameParser, encode_command
from callcontrol.logs import context_with
from callcontrol.metrics import LinkMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reply:
    """FreeSWITCH's answer to one command, or why none came."""

    ok: bool
    text: str
    frame: Frame | None = None


ReplyCallback = Callable[[Reply], None]


class LinkHandler(Protocol):
    """Receives everything from the link, on the event loop, in wire order."""

    def call_connected(self, channel: CallChannel) -> None: ...

    def call_event(self, channel: CallChannel, event: Event) -> None: ...

    def call_notice(self, channel: CallChannel, notice: Frame) -> None: ...

    def call_closed(self, channel: CallChannel, reason: str) -> None: ...


class CallChannel:
    """The asyncio side of one outbound socket (one call)."""

    def __init__(self, link: OutboundLink, session: _Session, channel_data: dict[str, str]) -> None:
        self._link = link
        self._session = session
        #: The connect reply's channel data (Unique-ID, Caller-*, variable_*).
        self.channel_data = channel_data
        self.unique_id = channel_data.get("Unique-ID", "")

    def send(self, frame: bytes, on_reply: ReplyCallback) -> None:
        """Write one encoded command; ``on_reply`` runs on the loop with the reply.

        A reply that does not come within the link's reply timeout means the
        connection can no longer be trusted (replies are positional): it is
        closed, and every pending command gets a failed Reply.
        """
        loop = self._link.loop
        replied = False

        def settle(reply: Reply) -> None:
            nonlocal replied
            if not replied:
                replied = True
                timer.cancel()
                if reply.frame is not None:
                    self._link.metrics.reply_seconds.observe(loop.time() - started)
                on_reply(reply)

        def expire() -> None:
            if not replied:
                self._link.metrics.reply_timeouts.inc()
                log.error(
                    "no reply from FreeSWITCH within %.1fs on %s; closing",
                    self._link.reply_timeout,
                    self.unique_id,
                )
                self.close()

        started = loop.time()
        timer = loop.call_later(self._link.reply_timeout, expire)
        self._link.submit(self._session.write, frame, settle)

    def close(self) -> None:
        """Drop the TCP connection (FreeSWITCH continues the dialplan)."""
        self._link.submit(self._session.abort, "closed by the gateway")


class _Session(OutboundSession):  # type: ignore[misc]  # greenswitch is untyped
    """greenswitch's OutboundSession reading frames with callcontrol.esl.frames."""

    def __init__(self, sock: Any, address: Any, link: OutboundLink) -> None:
        self._link = link
        self._pending: collections.deque[gevent.event.AsyncResult | ReplyCallback] = collections.deque()
        self._write_lock = gevent.lock.Semaphore()
        self._announced: CallChannel | None = None
        self._held: list[tuple[str, Any]] = []
        self._closed = gevent.event.Event()
        self._close_reason = "connection closed by FreeSWITCH"
        self.connected: bool = False  # greenswitch sets it True once the socket is adopted
        super().__init__(address, sock)

    # -- greenswitch hooks ------------------------------------------------
    def start_event_handlers(self) -> None:
        # Only our reader; greenswitch's 1 Hz event-queue poller is not needed.
        self._receive_events_greenlet = gevent.spawn(self.receive_events)

    def send(self, data: str) -> Frame:
        """Blocking send used by greenswitch's connect/myevents/linger (gevent side)."""
        result = gevent.event.AsyncResult()
        self.write(encode_command(data), result)
        try:
            frame: Frame = result.get(timeout=self._link.reply_timeout)
        except gevent.Timeout:
            self.abort(f"no reply to {data!r}")
            raise OutboundSessionHasGoneAway() from None
        return frame

    # -- writing -------------------------------------------------------------
    def write(self, frame: bytes, slot: gevent.event.AsyncResult | ReplyCallback) -> None:
        # The reply slot is queued in the same step as the write (under the
        # lock), so replies can never be matched to the wrong command.
        with self._write_lock:
            if not self.connected:
                self._fail(slot, "connection closed")
                return
            self._pending.append(slot)
            try:
                self.sock.sendall(frame)
            except OSError as exc:
                self.abort(f"write failed: {exc}")

    def abort(self, reason: str) -> None:
        if self.connected:
            self._close_reason = reason
        self.connected = False
        with contextlib.suppress(OSError):  # already closed by the peer
            self.sock.shutdown(stdlib_socket.SHUT_RDWR)

    # -- reading -------------------------------------------------------------
    def receive_events(self) -> None:
        parser = FrameParser()
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                parser.feed(data)
                batch: list[tuple[str, Any]] = []
                while (frame := parser.next_frame()) is not None:
                    self._route(frame, batch)
                if batch:
                    self._post(batch)
        except FrameError as exc:
            self._close_reason = f"protocol error: {exc}"
            self._link.metrics.protocol_errors.inc()
            log.error("bad frame from FreeSWITCH: %s", exc)
        except OSError as exc:
            if self.connected:
                self._close_reason = f"connection error: {exc}"
        finally:
            self.connected = False
            self._outbound_connected = False
            batch = []
            while self._pending:
                self._fail(self._pending.popleft(), self._close_reason, batch)
            batch.append(("closed", self._close_reason))
            self._post(batch)
            # greenswitch's makefile() holds a reference: close both, or the fd leaks.
            self.sock_file.close()
            self.sock.close()
            self._closed.set()

    def _route(self, frame: Frame, batch: list[tuple[str, Any]]) -> None:
        kind = frame.content_type
        self._link.metrics.frame_received(kind)
        if kind in ("command/reply", "api/response"):
            if not self._pending:
                log.warning("unsolicited %s from FreeSWITCH ignored", kind)
                return
            slot = self._pending.popleft()
            text = frame.reply_text if frame.reply_text is not None else frame.body.decode(errors="replace")
            reply = Reply(ok=text.startswith("+OK") or kind == "api/response", text=text.strip(), frame=frame)
            if isinstance(slot, gevent.event.AsyncResult):
                slot.set(frame)
            else:
                batch.append(("reply", (slot, reply)))
        elif kind == "text/event-plain":
            if frame.event is not None:
                batch.append(("event", frame.event))
        elif kind == "text/disconnect-notice":
            if frame.headers.get("Content-Disposition") == "linger":
                self._lingering = True
            batch.append(("notice", frame))
        else:
            log.debug("ignoring %s frame", kind)

    def _fail(
        self,
        slot: gevent.event.AsyncResult | ReplyCallback,
        reason: str,
        batch: list[tuple[str, Any]] | None = None,
    ) -> None:
        if isinstance(slot, gevent.event.AsyncResult):
            slot.set_exception(OutboundSessionHasGoneAway(reason))
        elif batch is not None:
            batch.append(("reply", (slot, Reply(ok=False, text=reason))))
        else:
            self._post([("reply", (slot, Reply(ok=False, text=reason)))])

    def _post(self, batch: list[tuple[str, Any]]) -> None:
        # Until the call is announced to the loop, hold what arrives (events can
        # follow `myevents` before the `linger` reply is processed).
        if self._announced is None:
            self._held.extend(batch)
            return
        self._link.post(self._announced, batch)

    def announce(self, channel: CallChannel) -> None:
        self._announced = channel
        held, self._held = self._held, []
        self._link.post(channel, [("connected", None), *held])

    def wait_closed(self) -> None:
        self._closed.wait()


class OutboundLink:
    """Listens for FreeSWITCH's outbound sockets and bridges them to asyncio."""

    def __init__(
        self,
        listen: Address,
        handler: LinkHandler,
        *,
        reply_timeout: float = 5.0,
        max_connections: int = 10000,
        metrics: LinkMetrics | None = None,
        reuse_port: bool = False,
    ) -> None:
        self._listen = listen
        # Cluster mode: replicas on one host share the port; the kernel spreads the calls.
        self._reuse_port = reuse_port
        self._handler = handler
        self.reply_timeout = reply_timeout
        self._max_connections = max_connections
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._hub: Any = None
        self._server: gevent.server.StreamServer | None = None
        self._stop: gevent.event.Event | None = None
        self._sessions: set[_Session] = set()
        self.address: Address | None = None
        self.metrics = metrics or LinkMetrics()
        self.metrics.count_connections(lambda: len(self._sessions))

    # -- lifecycle (asyncio side) --------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the link delivers to (the one ``start`` ran on)."""
        if self._loop is None:
            raise RuntimeError("link not started")
        return self._loop

    async def start(self) -> Address:
        self._loop = asyncio.get_running_loop()
        ready: concurrent.futures.Future[Address] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run_thread, args=(ready,), name="esl-link", daemon=True)
        self._thread.start()
        self.address = await asyncio.wrap_future(ready)
        log.info("outbound Event Socket listening on %s", self.address)
        return self.address

    async def shutdown(self) -> None:
        """Stop accepting, close every call's socket, end the thread. Idempotent."""
        if self._thread is None:
            return
        thread, self._thread = self._thread, None
        if self._hub is not None:
            self.submit(self._stop_in_thread)
        await asyncio.to_thread(thread.join, 10)

    # -- the seam ------------------------------------------------------------
    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` in its own greenlet on the gevent thread."""
        if self._hub is None:
            raise RuntimeError("link not started")
        self._hub.loop.run_callback_threadsafe(gevent.spawn, fn, *args)

    def post(self, channel: CallChannel, batch: list[tuple[str, Any]]) -> None:
        """gevent thread → loop, preserving order."""
        context = context_with(session_id=channel.unique_id)  # the session id for logs
        self.loop.call_soon_threadsafe(self._deliver, channel, batch, context=context)

    def _deliver(self, channel: CallChannel, batch: list[tuple[str, Any]]) -> None:
        handler = self._handler
        for kind, item in batch:
            try:
                if kind == "reply":
                    callback, reply = item
                    callback(reply)
                elif kind == "event":
                    handler.call_event(channel, item)
                elif kind == "notice":
                    handler.call_notice(channel, item)
                elif kind == "connected":
                    handler.call_connected(channel)
                elif kind == "closed":
                    handler.call_closed(channel, item)
            except Exception:
                # One bad event must not take the other calls down.
                log.exception("handling %s for call %s failed", kind, channel.unique_id)

    # -- gevent thread -------------------------------------------------------
    def _run_thread(self, ready: concurrent.futures.Future[Address]) -> None:
        try:
            self._hub = gevent.get_hub()
            listener = gevent.socket.socket(gevent.socket.AF_INET, gevent.socket.SOCK_STREAM)
            listener.setsockopt(gevent.socket.SOL_SOCKET, gevent.socket.SO_REUSEADDR, 1)
            if self._reuse_port:
                listener.setsockopt(gevent.socket.SOL_SOCKET, gevent.socket.SO_REUSEPORT, 1)
            listener.bind((self._listen.host, self._listen.port))
            listener.listen(1024)
            host, port = listener.getsockname()[:2]
            self._stop = gevent.event.Event()
            self._server = gevent.server.StreamServer(
                listener, self._handle, spawn=gevent.pool.Pool(self._max_connections)
            )
            self._server.start()
        except BaseException as exc:  # noqa: BLE001 - reported to start(), which raises it
            ready.set_exception(exc)
            return
        ready.set_result(Address(host, port))
        self._stop.wait()

    def _stop_in_thread(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in list(self._sessions):
            session.abort("gateway shutting down")
        for session in list(self._sessions):
            session.wait_closed()
        if self._stop is not None:
            self._stop.set()

    def _handle(self, sock: Any, address: Any) -> None:
        sock.setsockopt(gevent.socket.IPPROTO_TCP, gevent.socket.TCP_NODELAY, 1)
        session = _Session(sock, address, self)
        self._sessions.add(session)
        try:
            session.connect()
            data = dict(session.session_data or {})
            session.myevents()
            session.linger()
        except (OutboundSessionHasGoneAway, OSError) as exc:
            log.warning("outbound socket from %s failed during set-up: %s", address, exc)
            session.abort("set-up failed")
            session.wait_closed()
            self._sessions.discard(session)
            return
        session.announce(CallChannel(self, session, data))
        session.wait_closed()
        self._sessions.discard(session)
