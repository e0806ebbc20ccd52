"""The outbound Event Socket link: greenswitch on its own gevent thread.

This is the one place where the gevent thread and the asyncio loop meet.

* asyncio → gevent: ``CallChannel.send`` writes a command to the call's socket
  from the loop thread itself (a wake-up of the gevent thread per command cost
  more than the write); only the rest of a write the socket did not take whole,
  and a close, go to the gevent hub with ``run_callback_threadsafe``.
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

One peer cannot hurt the others:

* only addresses in ``allow`` are served, and at most ``max_connections`` at
  once; any other connection is closed at accept, before a byte is sent (the
  call goes on in its dialplan, as when nobody listens);
* a frame longer than ``max_frame_bytes`` (`FrameError`), or one whose rest
  takes longer than ``partial_frame_timeout`` to arrive, closes that socket;
* each reader hands frames to the loop in batches of at most ``_BATCH_FRAMES``
  and stops reading while ``_BATCHES_IN_FLIGHT`` of them are not yet handled:
  a flooding socket is slowed to the pace of the loop (TCP pushes back on the
  peer), and every other call's replies and events wait behind at most that
  many frames of it. An ordinary call never has that many in flight;
* each socket is read at most ``_READ_BYTES_PER_SECOND`` (after a burst of
  ``_READ_BURST_BYTES``): parsing costs CPU on a thread that shares the GIL
  with the loop, so a flood is held to a small share of it. A call's own
  socket carries a few dozen events of a few kB in its whole life.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import ipaddress
import logging
import math
import os
import socket as stdlib_socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import gevent
import gevent.event
import gevent.lock
import gevent.server
import gevent.socket
from greenswitch.esl import OutboundSession, OutboundSessionHasGoneAway

from callcontrol.config import Address
from callcontrol.esl.frames import (
    DEFAULT_MAX_FRAME_BYTES,
    Event,
    Frame,
    FrameError,
    FrameParser,
    encode_command,
)
from callcontrol.logs import session_id as log_session_id
from callcontrol.metrics import LinkMetrics

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK: Final[tuple[Network, ...]] = (
    ipaddress.IPv4Network("127.0.0.0/8"),
    ipaddress.IPv6Network("::1/128"),
)
# One reader's batches handed to the loop and not yet handled, at most, and frames per batch.
_BATCHES_IN_FLIGHT: Final = 4
_BATCH_FRAMES: Final = 64
# Bytes read per second per socket, at most, after a burst (a token bucket). Parsing a 4 kB
# event costs about 150 us, so a socket at this rate takes a few % of a core.
_READ_BYTES_PER_SECOND: Final = 1024 * 1024
_READ_BURST_BYTES: Final = 256 * 1024
_RECV_BYTES: Final = 65536


class _PartialFrameTimeout(Exception):
    """The rest of a begun frame did not arrive in time."""


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
        self._session.write_from_loop(frame, settle)

    def close(self) -> None:
        """Drop the TCP connection (FreeSWITCH continues the dialplan)."""
        self._link.submit_nowait(self._session.abort, "closed by the gateway")


class _NoFile:
    def close(self) -> None:
        pass


class _SocketForConstructor:
    """What greenswitch's OutboundSession constructor gets as its socket: it only calls
    makefile() on it (see `_Session.__init__`)."""

    def makefile(self, mode: str) -> _NoFile:
        return _NoFile()


class _Session(OutboundSession):  # type: ignore[misc]  # greenswitch is untyped
    """greenswitch's OutboundSession reading frames with callcontrol.esl.frames."""

    def __init__(self, sock: Any, address: Any, link: OutboundLink) -> None:
        self._link = link
        self._pending: collections.deque[gevent.event.AsyncResult | ReplyCallback] = collections.deque()
        self._write_lock = gevent.lock.Semaphore()
        self._announced: CallChannel | None = None
        self._held: list[tuple[str, Any]] = []
        self._held_bytes = 0
        # Batches handed to the loop (counted by the reader) and handled (counted by the loop):
        # each counter has one writer. `_handled` wakes the reader only when it waits for one.
        self._posted = 0
        self._delivered = 0
        self._reader_waiting = False
        self._handled = gevent.event.Event()
        # The loop thread writes a live call's commands itself (`write_from_loop`): waking the
        # gevent thread for each one cost a wake-up and a GIL hand-over each way. The lock
        # orders those writes against the reader's close, so none can reach a descriptor that
        # was closed and reused; `_loop_writes` is set once set-up is over (the gevent side
        # writes until then) and cleared for good by a write the socket did not take whole.
        self._fd_lock = threading.Lock()
        self._loop_writes = False
        self._tokens = float(_READ_BURST_BYTES)
        self._tokens_at = time.monotonic()
        self._closed = gevent.event.Event()
        self._close_reason = "connection closed by FreeSWITCH"
        self.connected: bool = False  # greenswitch sets it True once the socket is adopted
        # greenswitch's constructor opens a makefile() reader that is never read (our reader
        # uses recv): it gets a stand-in whose file is nothing, which saves building a SocketIO
        # and an 8 kB buffer per call, and the real socket right after.
        super().__init__(address, _SocketForConstructor())
        self.sock = sock
        # greenswitch's own event dispatch (its queue, the poller that drains it, the handler
        # lists) is never used: our reader routes every frame. Its queue alone held about
        # 2.5 kB per live call; with None, a path that still reached it would fail loudly.
        self._esl_event_queue = None

    # -- greenswitch hooks ------------------------------------------------
    def start_event_handlers(self) -> None:
        # Only our reader; greenswitch's 1 Hz event-queue poller is not needed.
        self._receive_events_greenlet = gevent.spawn(self.receive_events)

    def send(self, data: str) -> Frame:
        """Blocking send for greenswitch's own commands (gevent side)."""
        return self.pipeline((data,))[0]

    def pipeline(self, commands: Sequence[str]) -> list[Frame]:
        """Write ``commands`` in one go, then wait for their replies in order (gevent side).

        FreeSWITCH reads an outbound socket's commands one at a time off the stream
        (mod_event_socket's read_packet) and answers each in turn, so set-up's connect,
        myevents and linger need not each wait for the reply before: one write and one
        round trip instead of three. Each reply has ``reply_timeout`` after the one before.
        """
        results = [gevent.event.AsyncResult() for _ in commands]
        self.write(b"".join(encode_command(command) for command in commands), *results)
        frames: list[Frame] = []
        for command, result in zip(commands, results, strict=True):
            try:
                frames.append(result.get(timeout=self._link.reply_timeout))
            except gevent.Timeout:
                self.abort(f"no reply to {command!r}")
                raise OutboundSessionHasGoneAway() from None
        return frames

    def set_up(self) -> Mapping[str, str]:
        """greenswitch's connect(), myevents() and linger(), pipelined: the channel's data.

        greenswitch sends each after the reply to the one before; here set-up is one write
        and one round trip (see `pipeline`).
        """
        connected, _, _ = self.pipeline(("connect", "myevents", "linger"))
        self._outbound_connected = True  # as greenswitch's connect() records it
        return connected.headers

    # -- writing -------------------------------------------------------------
    def write(self, frame: bytes, *slots: gevent.event.AsyncResult | ReplyCallback) -> None:
        """Write ``frame`` (one command or several), one reply slot per command in it."""
        # The reply slots are queued in the same step as the write (under the
        # lock), so replies can never be matched to the wrong command.
        with self._write_lock:
            if not self.connected:
                for slot in slots:
                    self._fail(slot, "connection closed")
                return
            self._pending.extend(slots)
            try:
                self.sock.sendall(frame)
            except OSError as exc:
                self.abort(f"write failed: {exc}")

    def write_nowait(self, frame: bytes, slot: ReplyCallback) -> None:
        """`write` from a hub callback, which must never block: no greenlet for a command.

        What the socket takes at once is written here (a command is a few hundred bytes; the
        kernel's send buffer takes it); only a rest, or a write behind another one still under
        way, goes to a greenlet. The write lock is taken in this same step, so the bytes of two
        commands never interleave and reply slots stay in write order.
        """
        if not self._write_lock.acquire(blocking=False):
            gevent.spawn(self.write, frame, slot)  # queued behind the write under way (FIFO lock)
            return
        rest = b""
        try:
            if not self.connected:
                self._fail(slot, "connection closed")
                return
            self._pending.append(slot)
            try:
                # os.write on the non-blocking socket: gevent's send would wait (switch) instead.
                sent = os.write(self.sock.fileno(), frame)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self.abort(f"write failed: {exc}")
                return
            rest = frame[sent:]
        finally:
            if not rest:
                self._write_lock.release()
        gevent.spawn(self._send_rest, rest)

    def write_from_loop(self, frame: bytes, slot: ReplyCallback) -> None:
        """`write` from the loop thread: the socket is written here, without waking the hub.

        A command is a few hundred bytes and the kernel's send buffer takes it at once; what it
        does not take (a peer that stopped reading) goes to the gevent side, and so does every
        later command of the call, in order behind it.
        """
        with self._fd_lock:
            if not self._loop_writes:
                # Set-up not over (never, for a call the loop knows of), or a rest under way.
                self._link.submit_nowait(self.write_nowait, frame, slot)
                return
            if not self.connected:
                self._fail(slot, "connection closed")
                return
            self._pending.append(slot)  # before the bytes: the reply cannot come first
            try:
                sent = os.write(self.sock.fileno(), frame)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._link.submit_nowait(self.abort, f"write failed: {exc}")
                return
            if sent < len(frame):
                self._loop_writes = False
                self._link.submit_nowait(self._write_rest, frame[sent:])

    def _write_rest(self, rest: bytes) -> None:
        # A hub callback, before any later command's `write_nowait` (the queue is FIFO): the
        # write lock taken here makes those wait behind the rest.
        if self._write_lock.acquire(blocking=False):
            gevent.spawn(self._send_rest, rest)
        else:  # no gevent-side write is under way once set-up is over; kept safe regardless
            gevent.spawn(self._locked_send, rest)

    def _locked_send(self, data: bytes) -> None:
        self._write_lock.acquire()
        self._send_rest(data)

    def _send_rest(self, rest: bytes) -> None:
        # Holds the write lock that write_nowait took.
        try:
            self.sock.sendall(rest)
        except OSError as exc:
            self.abort(f"write failed: {exc}")
        finally:
            self._write_lock.release()

    def abort(self, reason: str) -> None:
        if self.connected:
            self._close_reason = reason
        self.connected = False
        self._handled.set()  # a reader waiting on the loop goes on to find the socket closed
        with contextlib.suppress(OSError):  # already closed by the peer
            self.sock.shutdown(stdlib_socket.SHUT_RDWR)

    # -- reading -------------------------------------------------------------
    def receive_events(self) -> None:
        parser = FrameParser(max_frame_bytes=self._link.max_frame_bytes)
        begun: float | None = None  # when the unfinished frame in the parser began to arrive
        try:
            while True:
                size = self._receive(parser, begun)
                if not size:
                    break
                if self._read_frames(parser):
                    begun = None
                if parser.buffered and begun is None:
                    begun = time.monotonic()
                delay = self._pace(size)
                if delay:
                    gevent.sleep(delay)
                    if begun is not None:
                        begun += delay  # our own pause is not the peer's slowness
        except FrameError as exc:
            self._close_reason = f"protocol error: {exc}"
            self._link.metrics.protocol_errors.inc()
            log.error("bad frame from FreeSWITCH: %s", exc)
        except _PartialFrameTimeout:
            timeout_ms = round(self._link.partial_frame_timeout * 1000)
            self._close_reason = f"protocol error: a frame left unfinished for {timeout_ms} ms"
            self._link.metrics.protocol_errors.inc()
            log.error("FreeSWITCH left a frame unfinished for %d ms; closing", timeout_ms)
        except OSError as exc:
            if self.connected:
                self._close_reason = f"connection error: {exc}"
        finally:
            with self._fd_lock:  # a loop-thread write under way ends first; none starts after
                self.connected = False
            self._outbound_connected = False
            self._link.release(self)
            closing: list[tuple[str, Any]] = []
            while self._pending:
                self._fail(self._pending.popleft(), self._close_reason, closing)
            closing.append(("closed", self._close_reason))
            self._post(closing)
            self.sock.close()
            self._closed.set()

    def _receive(self, parser: FrameParser, begun: float | None) -> int:
        """Feed the next bytes to ``parser``; how many (0: the peer closed).

        With a frame begun, only until its partial-frame deadline. The chunk read is not kept
        past this call: the reader waits in the next recv for most of a call's life, and a
        reference held across that wait kept each call's last chunk (its set-up replies, a
        few kB) alive.
        """
        if begun is None:
            data: bytes = self.sock.recv(_RECV_BYTES)
        else:
            remaining = begun + self._link.partial_frame_timeout - time.monotonic()
            if remaining <= 0:
                raise _PartialFrameTimeout
            # The deadline is for the whole frame: a peer trickling a byte at a time does not reset it.
            with gevent.Timeout(remaining, _PartialFrameTimeout()):
                data = self.sock.recv(_RECV_BYTES)
        parser.feed(data)
        return len(data)

    def _read_frames(self, parser: FrameParser) -> bool:
        """Route every complete frame, a batch at a time; True if any frame was complete."""
        completed = False
        while True:
            batch: list[tuple[str, Any]] = []
            before = parser.buffered
            count = 0
            try:
                while count < _BATCH_FRAMES and (frame := parser.next_frame()) is not None:
                    count += 1
                    self._route(frame, batch)
            except FrameError:
                # What came before the bad frame is still news (a hangup, a reply): deliver it.
                if batch and self._announced is not None:
                    self._link.post(self._announced, batch)
                raise
            completed = completed or count > 0
            if batch:
                self._hand_over(batch, before - parser.buffered)
            # Let the other sockets' readers and writers in between batches: recv() does not
            # yield while data is waiting, so a busy socket would otherwise keep the thread.
            gevent.sleep(0)
            if count < _BATCH_FRAMES or not self.connected:
                return completed

    def _hand_over(self, batch: list[tuple[str, Any]], size: int) -> None:
        """Give a batch to the loop; wait while too many are unhandled (the fairness bound)."""
        if self._announced is None:
            # Set-up is not finished: FreeSWITCH sends a few events here, a flood is no FreeSWITCH.
            self._held_bytes += size
            if self._held_bytes > self._link.max_frame_bytes:
                raise FrameError(f"over {self._link.max_frame_bytes} bytes of events before set-up ended")
            self._held.extend(batch)
            return
        self._posted += 1
        if not self._link.post(self._announced, batch, self._batch_handled):
            self._posted -= 1
            return
        while self._posted - self._delivered >= _BATCHES_IN_FLIGHT and self.connected:
            self._handled.clear()
            self._reader_waiting = True
            # Checked again once the loop can see that we wait (see `_batch_handled`).
            if self._posted - self._delivered >= _BATCHES_IN_FLIGHT:
                # The news comes through the hub's thread-safe wake-up, which does not keep the
                # hub alive by itself: a timed wait does (else, once all else has stopped, the
                # hub would report that this wait could never end).
                self._handled.wait(1.0)
        self._reader_waiting = False

    def _pace(self, size: int) -> float:
        """Seconds to wait before reading on, so that this socket stays within its read rate."""
        now = time.monotonic()
        refill = (now - self._tokens_at) * _READ_BYTES_PER_SECOND
        self._tokens = min(float(_READ_BURST_BYTES), self._tokens + refill) - size
        self._tokens_at = now
        return 0.0 if self._tokens >= 0 else -self._tokens / _READ_BYTES_PER_SECOND

    def _batch_handled(self) -> None:
        # On the loop thread. Only a reader that waits needs waking: an ordinary call never
        # has that many batches in flight, so it costs the hub no wake-up.
        self._delivered += 1
        if self._reader_waiting:
            self._link.submit_nowait(self._handled.set)

    def _route(self, frame: Frame, batch: list[tuple[str, Any]]) -> None:
        kind = frame.content_type
        self._link.metrics.frame_received(kind)
        if kind in ("command/reply", "api/response"):
            if not self._pending:
                # Replies are positional: one to no command means the stream is out of step.
                raise FrameError(f"{kind} to no command")
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
        self._loop_writes = True  # set-up's writes are done; the loop writes from now on
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
        allow: Sequence[Network] = LOOPBACK,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        partial_frame_timeout: float = 5.0,
        channel_fields: Sequence[str] | None = None,
        reuse_port: bool = False,
    ) -> None:
        self._listen = listen
        # The connect reply's fields a CallChannel keeps (None: all). The reply has ~150 headers
        # (~40 kB decoded); held for a call's life, it was half of the memory per call.
        self._channel_fields = None if channel_fields is None else tuple(channel_fields)
        # Cluster mode: replicas on one host share the port; the kernel spreads the calls.
        self._reuse_port = reuse_port
        self._handler = handler
        self.reply_timeout = reply_timeout
        self._max_connections = max_connections
        self._allow = tuple(allow)
        self.max_frame_bytes = max_frame_bytes
        self.partial_frame_timeout = partial_frame_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._hub: Any = None
        self._server: _Server | None = None
        self._stop: gevent.event.Event | None = None
        self._sessions: set[_Session] = set()
        # asyncio -> gevent calls waiting for the hub (see `submit_nowait`).
        self._to_hub: collections.deque[tuple[Callable[..., None], tuple[Any, ...]]] = collections.deque()
        self._hub_wake_pending = False
        # gevent -> asyncio batches waiting for the loop, with what to call back when handled.
        self._to_loop: collections.deque[
            tuple[CallChannel, list[tuple[str, Any]], Callable[[], None] | None]
        ] = collections.deque()
        self._loop_wake_pending = False
        self.address: Address | None = None
        self.metrics = metrics or LinkMetrics()
        self._refusals = RefusalLog()
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
        """Run ``fn(*args)`` in its own greenlet on the gevent thread (it may block)."""
        if self._hub is None:
            raise RuntimeError("link not started")
        self._hub.loop.run_callback_threadsafe(gevent.spawn, fn, *args)

    def submit_nowait(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` in a hub callback on the gevent thread; ``fn`` must never block.

        Calls submitted before the gevent thread wakes up share one wake-up (a thread-safe
        callback costs a write to the hub's wake-up pipe and a GIL hand-over), in order.
        """
        if self._hub is None:
            raise RuntimeError("link not started")
        self._to_hub.append((fn, args))
        # The flag is read after the append and cleared before the drain: whatever is appended
        # while a wake-up is pending is drained by it, anything later asks for a new one.
        if not self._hub_wake_pending:
            self._hub_wake_pending = True
            self._hub.loop.run_callback_threadsafe(self._drain_to_hub)

    def _drain_to_hub(self) -> None:
        self._hub_wake_pending = False
        queue = self._to_hub
        while queue:
            fn, args = queue.popleft()
            try:
                fn(*args)
            except Exception:
                log.exception("Event Socket call %s failed", getattr(fn, "__name__", fn))

    def post(
        self,
        channel: CallChannel,
        batch: list[tuple[str, Any]],
        on_delivered: Callable[[], None] | None = None,
    ) -> bool:
        """gevent thread → loop, preserving order; ``on_delivered`` then runs on the loop.

        Batches posted before the loop wakes up share one wake-up (see `submit_nowait`).
        ``on_delivered`` runs right after its batch is handled, even if handling failed; it
        must be cheap and never block. False if the loop is closed (nothing will be delivered,
        nor acknowledged).
        """
        self._to_loop.append((channel, batch, on_delivered))
        if self._loop_wake_pending:
            return True
        self._loop_wake_pending = True
        try:
            self.loop.call_soon_threadsafe(self._drain_to_loop)
        except RuntimeError:
            self._to_loop.clear()
            return False
        return True

    def _drain_to_loop(self) -> None:
        self._loop_wake_pending = False
        queue = self._to_loop
        while queue:
            channel, batch, on_delivered = queue.popleft()
            # The call's session id for the log lines of its handling.
            token = log_session_id.set(channel.unique_id)
            try:
                self._handle_batch(channel, batch)
            finally:
                log_session_id.reset(token)
                if on_delivered is not None:
                    on_delivered()

    def _handle_batch(self, channel: CallChannel, batch: list[tuple[str, Any]]) -> None:
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
            family = gevent.socket.AF_INET6 if ":" in self._listen.host else gevent.socket.AF_INET
            listener = gevent.socket.socket(family, gevent.socket.SOCK_STREAM)
            listener.setsockopt(gevent.socket.SOL_SOCKET, gevent.socket.SO_REUSEADDR, 1)
            if self._reuse_port:
                listener.setsockopt(gevent.socket.SOL_SOCKET, gevent.socket.SO_REUSEPORT, 1)
            listener.bind((self._listen.host, self._listen.port))
            listener.listen(1024)
            host, port = listener.getsockname()[:2]
            self._stop = gevent.event.Event()
            # No pool: a pool that is full stops accepting, and FreeSWITCH's next call would wait
            # unseen in the listen backlog; `_handle` closes it instead (see `_admit`).
            self._server = _Server(listener, self._handle)
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

    def release(self, session: _Session) -> None:
        """The connection's slot is free: called before its close is posted to the loop, so
        anyone who has heard of the close finds the slot free. Idempotent."""
        self._sessions.discard(session)

    def _admit(self, address: Any) -> str | None:
        """Why a new connection is refused, or None to serve it."""
        refused = _refused_address(str(address[0]), self._allow)
        if refused is not None:
            return refused
        if len(self._sessions) >= self._max_connections:
            return f"{len(self._sessions)} connections open (esl.max_connections)"
        return None

    def _handle(self, sock: Any, address: Any) -> None:
        refused = self._admit(address)
        if refused is not None:
            # Closed before a byte is sent: FreeSWITCH's socket application fails and the
            # dialplan goes on, as when nobody listens.
            self._refusals.log(str(address[0]), refused)
            sock.close()
            return
        try:
            sock.setsockopt(gevent.socket.IPPROTO_TCP, gevent.socket.TCP_NODELAY, 1)
            session = _Session(sock, address, self)
        except BaseException:
            sock.close()
            raise
        self._sessions.add(session)
        try:
            reply = session.set_up()
            if self._channel_fields is None:
                data = dict(reply)
            else:
                data = {
                    name: value for name in self._channel_fields if (value := reply.get(name)) is not None
                }
            session.session_data = data  # greenswitch's copy: not the whole reply
        except (OutboundSessionHasGoneAway, OSError) as exc:
            log.warning("outbound socket from %s failed during set-up: %s", address, exc)
            session.abort("set-up failed")
            session.wait_closed()
            self._sessions.discard(session)
            return
        except BaseException:
            session.abort("set-up failed")
            raise
        session.announce(CallChannel(self, session, data))
        # Nothing to wait for: the session's reader closes the socket and frees its slot
        # (`release`), and this greenlet's stack goes now rather than at the call's end.


class RefusalLog:
    """At most one warning per ``interval_s`` for refused sockets, with a count of the rest.

    A storm of refused connections (a flood, a misdirected switch) would otherwise write a line
    each and bury everything else in the log. Used on the gevent thread only.
    """

    def __init__(self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._last = -math.inf
        self._unlogged = 0

    def log(self, host: str, why: str) -> None:
        now = self._clock()
        if now - self._last < self._interval_s:
            self._unlogged += 1
            return
        more = f" ({self._unlogged} more refused since the last such line)" if self._unlogged else ""
        log.warning("outbound socket from %s refused: %s%s", host, why, more)
        self._last, self._unlogged = now, 0


# FreeSWITCH connects from a few addresses, each call anew: ipaddress parsing and network
# membership for each cost more than the rest of the accept. A bounded cache of the verdicts.
@functools.lru_cache(maxsize=256)
def _refused_address(host: str, allow: tuple[Network, ...]) -> str | None:
    """Why a peer at ``host`` is refused (not an IP, not in ``allow``), or None."""
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return "not an IP peer"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if not any(ip in network for network in allow):
        return "not in esl.allow"
    return None


class _Server(gevent.server.StreamServer):  # type: ignore[misc]  # gevent is untyped here
    """A StreamServer that leaves each socket to its handler (see `OutboundLink._handle`).

    gevent's closes a connection's socket when its handler returns; ours returns once the call
    is set up, and the session's reader closes the socket when the call ends.
    """

    def do_close(self, *args: Any) -> None:
        pass
