"""The cluster outbox: one shared store in Redis, partitioned per application.

Every replica appends the events it emits; each application's lane is
delivered by the one replica holding that application's *lease* (see
``leases.py``). The layout mirrors the SQLite tables, one key per index
(``P`` is the key prefix, ``app`` an application id):

* ``P seq``                 - the counter that numbers deliveries (emit order);
* ``P d:<seq>``             - a hash per delivery (the columns of ``deliveries``);
* ``P att:<seq>``           - a list of its attempts, JSON, oldest first;
* ``P ids``                 - event id -> seq (idempotent ``add``, ``get``);
* ``P s:<len>:<app>:<sid>`` - a session's pending seqs (a zset by seq);
* ``P due:<app>``           - the session heads, by next attempt time, ties by
  zero-padded seq (members of equal score sort as strings);
* ``P l:<status>:<app>``    - the listing of one status, by seq;
* ``P fin:<status>``        - finished deliveries by finish time (retention);
* ``P pending``             - every pending seq by round start (depth, age);
* ``P apps``                - applications ever seen.

Each change is one Lua script, so it is atomic like a SQLite transaction,
and per-session order (only a head is due; finishing it promotes the next)
holds across crashes of any replica. Scripts build keys from their
arguments, so this needs a single Redis (standalone or Sentinel), not
Redis Cluster.

Events are stored off the event loop: ``add_soon`` queues an event for a
writer thread with a connection of its own, which sends everything queued
since its last round trip as one pipeline (Redis then writes and, with
``appendfsync always``, fsyncs the whole batch once) and reports each result
back on the loop. An event counts as stored only when that report says
Redis acknowledged it; one writer, first in first out, keeps the emit order.
Why a thread and not ``redis.asyncio``: measured on the same batches
(``tests/webhooks/bench_redis_writer.py``), the thread costs no more CPU per
event in all (26-44 us against 37-65 us) and puts only 3-15 us of it on the
loop, where redis.asyncio packs and parses every command on the loop; and
the blocking client's socket timeouts bound a hung Redis simply. The loop
only appends to a queue and takes one callback per batch.

The lanes' claims go through the writer too: ``claim`` queues one script
(the due heads and when the next is due) and the lane awaits its reply, so
a claim holds the loop for no round trip, shares a pipeline with the records
queued before it, and sees them applied. The rest (the API's reads, the
synchronous ``due``/``next_due``) uses the blocking client on the loop:
``Outbox`` is synchronous there. Its socket timeouts bound how long a hung
Redis can hold the loop, and after a timeout calls fail at once for a short
while (``_COOL_OFF_S``) instead of each waiting out the timeout again. A
call that timed out may still have been applied when Redis resumes: an
``add`` that failed can then be delivered after all (at least once, never
lost silently).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from typing import Any, Final, TypeAlias

import redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.retry import Retry

from callcontrol.webhooks.outbox import (
    AttemptRecord,
    Claim,
    DeliveryRecord,
    DeliveryStatus,
    DueDelivery,
    NewDelivery,
    OutboxError,
    Outcome,
)

log = logging.getLogger(__name__)

DEFAULT_PREFIX: Final = "callcontrol:webhooks:"
# After Redis timed out, calls fail at once for this long rather than each
# blocking the loop for a socket timeout (a refused connection fails fast anyway).
_COOL_OFF_S: Final = 0.2
# At most this many events in one pipeline: a burst is stored in a few round trips.
_BATCH_MAX: Final = 256
# Bound on the claimed deliveries whose application is remembered.
_APPS_KEPT: Final = 100_000

#: What a queued event comes to: True stored, False stored already (same id), or why not.
AddResult: TypeAlias = "bool | OutboxError"
Done: TypeAlias = Callable[[AddResult], None]
#: The writer's report of one script call: its reply, or the OutboxError.
Reply: TypeAlias = Callable[[Any], None]

# Shared Lua: the key of a session's pending set, and the padded due member.
_LUA_HELPERS = """
local p = ARGV[1]
local function skey(app, session) return p .. 's:' .. #app .. ':' .. app .. ':' .. session end
local function pad(seq) return string.format('%020d', tonumber(seq)) end
"""

# ARGV: prefix, event_id, event_type, app, session, body, created_at
_ADD = (
    _LUA_HELPERS
    + """
local event_id, app, session, at = ARGV[2], ARGV[4], ARGV[5], ARGV[7]
if redis.call('HEXISTS', p .. 'ids', event_id) == 1 then return 0 end
local seq = redis.call('INCR', p .. 'seq')
redis.call('HSET', p .. 'd:' .. seq, 'event_id', event_id, 'event_type', ARGV[3], 'app_id', app,
    'session_id', session, 'body', ARGV[6], 'status', 'pending', 'created_at', at,
    'next_attempt_at', at, 'round_started_at', at, 'round_attempts', 0, 'attempts', 0, 'last_error', '')
redis.call('HSET', p .. 'ids', event_id, seq)
local s = skey(app, session)
if redis.call('ZCARD', s) == 0 then redis.call('ZADD', p .. 'due:' .. app, at, pad(seq)) end
redis.call('ZADD', s, seq, seq)
redis.call('ZADD', p .. 'l:pending:' .. app, seq, seq)
redis.call('ZADD', p .. 'pending', at, seq)
redis.call('SADD', p .. 'apps', app)
redis.call('PUBLISH', p .. 'wake', app)
return seq
"""
)

# Leaves a pending delivery (already marked finished) out of the pending
# indexes and promotes the next event of its session.
_LUA_FINISH = """
local function finish(seq, app, session, status, finished_at)
    redis.call('ZREM', p .. 'due:' .. app, pad(seq))
    redis.call('ZREM', p .. 'l:pending:' .. app, seq)
    redis.call('ZREM', p .. 'pending', seq)
    redis.call('ZADD', p .. 'l:' .. status .. ':' .. app, seq, seq)
    redis.call('ZADD', p .. 'fin:' .. status, finished_at, seq)
    local s = skey(app, session)
    redis.call('ZREM', s, seq)
    local nxt = redis.call('ZRANGE', s, 0, 0)[1]
    if nxt then
        local at = redis.call('HGET', p .. 'd:' .. nxt, 'next_attempt_at')
        redis.call('ZADD', p .. 'due:' .. app, at, pad(nxt))
    end
end
"""

# ARGV: prefix, seq, lease token ('' = none asked), attempt json, attempt number,
#       outcome, next_attempt_at, last_error, status code ('' = none), finished_at
_RECORD = (
    _LUA_HELPERS
    + _LUA_FINISH
    + """
local seq = ARGV[2]
local d = p .. 'd:' .. seq
local f = redis.call('HMGET', d, 'app_id', 'session_id', 'status', 'attempts')
if not f[1] then return redis.error_reply('ERR delivery ' .. seq .. ' is unknown') end
local app, session = f[1], f[2]
if ARGV[3] ~= '' and redis.call('GET', p .. 'lease:' .. app) ~= ARGV[3] then
    return redis.error_reply('LEASE this replica no longer holds the lease of ' .. app)
end
-- A call repeated after a lost reply: the attempt is already recorded.
if tonumber(f[4]) >= tonumber(ARGV[5]) then return 0 end
if f[3] ~= 'pending' then return redis.error_reply('ERR delivery ' .. seq .. ' is not pending') end
redis.call('RPUSH', p .. 'att:' .. seq, ARGV[4])
redis.call('HINCRBY', d, 'attempts', 1)
redis.call('HSET', d, 'last_error', ARGV[8])
if ARGV[9] == '' then redis.call('HDEL', d, 'last_status_code')
else redis.call('HSET', d, 'last_status_code', ARGV[9]) end
if ARGV[6] == 'retry' then
    redis.call('HINCRBY', d, 'round_attempts', 1)
    redis.call('HSET', d, 'next_attempt_at', ARGV[7])
    redis.call('ZADD', p .. 'due:' .. app, ARGV[7], pad(seq))
    return 1
end
redis.call('HSET', d, 'status', ARGV[6], 'finished_at', ARGV[10])
finish(seq, app, session, ARGV[6], ARGV[10])
return 1
"""
)

# ARGV: prefix, app, reason, now
_FAIL_PENDING = (
    _LUA_HELPERS
    + """
local app, reason, now = ARGV[2], ARGV[3], ARGV[4]
local seqs = redis.call('ZRANGE', p .. 'l:pending:' .. app, 0, -1)
for _, seq in ipairs(seqs) do
    local d = p .. 'd:' .. seq
    local session = redis.call('HGET', d, 'session_id')
    redis.call('HSET', d, 'status', 'failed', 'finished_at', now, 'last_error', reason)
    redis.call('ZADD', p .. 'l:failed:' .. app, seq, seq)
    redis.call('ZADD', p .. 'fin:failed', now, seq)
    redis.call('ZREM', p .. 'pending', seq)
    redis.call('DEL', skey(app, session))
end
redis.call('DEL', p .. 'l:pending:' .. app, p .. 'due:' .. app)
return #seqs
"""
)

# ARGV: prefix, app, event_id, now. Returns the seq, -1 unknown, -2 still pending.
_REQUEUE = (
    _LUA_HELPERS
    + """
local app, now = ARGV[2], ARGV[4]
local seq = redis.call('HGET', p .. 'ids', ARGV[3])
if not seq then return -1 end
local d = p .. 'd:' .. seq
local f = redis.call('HMGET', d, 'app_id', 'session_id', 'status')
if f[1] ~= app then return -1 end
if f[3] == 'pending' then return -2 end
redis.call('ZREM', p .. 'l:' .. f[3] .. ':' .. app, seq)
redis.call('ZREM', p .. 'fin:' .. f[3], seq)
redis.call('HSET', d, 'status', 'pending', 'next_attempt_at', now, 'round_started_at', now,
    'round_attempts', 0, 'last_error', '')
redis.call('HDEL', d, 'finished_at')
local s = skey(app, f[2])
if redis.call('ZCARD', s) == 0 then redis.call('ZADD', p .. 'due:' .. app, now, pad(seq)) end
redis.call('ZADD', s, seq, seq)
redis.call('ZADD', p .. 'l:pending:' .. app, seq, seq)
redis.call('ZADD', p .. 'pending', now, seq)
redis.call('PUBLISH', p .. 'wake', app)
return tonumber(seq)
"""
)

# ARGV: prefix, status, finished_before, limit
_PRUNE = (
    _LUA_HELPERS
    + """
local status = ARGV[2]
local seqs = redis.call('ZRANGEBYSCORE', p .. 'fin:' .. status, '-inf', '(' .. ARGV[3], 'LIMIT', 0, ARGV[4])
for _, seq in ipairs(seqs) do
    local f = redis.call('HMGET', p .. 'd:' .. seq, 'app_id', 'event_id')
    if f[1] then
        redis.call('ZREM', p .. 'l:' .. status .. ':' .. f[1], seq)
        redis.call('HDEL', p .. 'ids', f[2])
    end
    redis.call('DEL', p .. 'd:' .. seq, p .. 'att:' .. seq)
    redis.call('ZREM', p .. 'fin:' .. status, seq)
end
return #seqs
"""
)

_DUE_FIELDS = (
    "event_id",
    "app_id",
    "session_id",
    "body",
    "next_attempt_at",
    "round_started_at",
    "round_attempts",
    "attempts",
)

# The due heads of an application, into ``out``; each claimed one joins ``skip``.
# ARGV: prefix, app, lease token, now, limit, excluded seqs...
# Nothing is due to a replica that does not hold the application's lease.
_DUE_HEADS = (
    _LUA_HELPERS
    + """
local app, limit = ARGV[2], tonumber(ARGV[5])
if redis.call('GET', p .. 'lease:' .. app) ~= ARGV[3] then return false end
local skip, skipped = {}, #ARGV - 5
for i = 6, #ARGV do skip[tonumber(ARGV[i])] = true end
local key = p .. 'due:' .. app
local members = redis.call('ZRANGEBYSCORE', key, '-inf', ARGV[4], 'LIMIT', 0, limit + skipped)
local out = {}
for _, m in ipairs(members) do
    local seq = tonumber(m)
    if not skip[seq] and #out < limit then
        local row = redis.call('HMGET', p .. 'd:' .. seq, """
    + ", ".join(f"'{name}'" for name in _DUE_FIELDS)
    + """)
        table.insert(row, 1, seq)
        table.insert(out, row)
        skip[seq] = true
    end
end
"""
)

_DUE = _DUE_HEADS + "return out\n"

# ARGV: prefix, app, excluded seqs...
_NEXT_DUE = (
    _LUA_HELPERS
    + """
local skip = {}
for i = 3, #ARGV do skip[tonumber(ARGV[i])] = true end
local members = redis.call('ZRANGE', p .. 'due:' .. ARGV[2], 0, #ARGV - 2, 'WITHSCORES')
for i = 1, #members, 2 do
    if not skip[tonumber(members[i])] then return members[i + 1] end
end
return false
"""
)

# ``_DUE``, then ``_NEXT_DUE`` of what is left unless ``limit`` heads were
# claimed: one round trip. Returns {rows, next time or false}; false without the lease.
_CLAIM = (
    _DUE_HEADS
    + """
if #out == limit then return {out, false} end
local heads = redis.call('ZRANGE', key, 0, skipped + #out, 'WITHSCORES')
for i = 1, #heads, 2 do
    if not skip[tonumber(heads[i])] then return {out, heads[i + 1]} end
end
return {out, false}
"""
)

# ARGV: prefix
_PENDING_APPS = """
local out = {}
for _, app in ipairs(redis.call('SMEMBERS', ARGV[1] .. 'apps')) do
    if redis.call('ZCARD', ARGV[1] .. 'l:pending:' .. app) > 0 then table.insert(out, app) end
end
return out
"""

_DETAIL_FIELDS = (
    "event_id",
    "event_type",
    "app_id",
    "session_id",
    "status",
    "created_at",
    "attempts",
    "next_attempt_at",
    "finished_at",
    "last_error",
    "last_status_code",
)


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode()


def _str(value: object) -> str:
    """A CONFIG GET key or value: redis-py gives str or bytes depending on the version."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _float_or_none(value: bytes | None) -> float | None:
    return None if value is None else float(value)


def _int_or_none(value: bytes | None) -> int | None:
    return None if value is None else int(value)


def _detail(seq: int, values: Sequence[bytes | None]) -> DeliveryRecord:
    row = dict(zip(_DETAIL_FIELDS, values, strict=True))
    status = DeliveryStatus(_text(row["status"]))
    return DeliveryRecord(
        seq=seq,
        event_id=_text(row["event_id"]),
        event_type=_text(row["event_type"]),
        app_id=_text(row["app_id"]),
        session_id=_text(row["session_id"]),
        status=status,
        created_at=float(row["created_at"] or 0),
        attempt_count=int(row["attempts"] or 0),
        next_attempt_at=_float_or_none(row["next_attempt_at"]) if status is DeliveryStatus.PENDING else None,
        finished_at=_float_or_none(row["finished_at"]),
        last_error=_text(row["last_error"]),
        last_status_code=_int_or_none(row["last_status_code"]),
    )


def _add_args(prefix: str, new: NewDelivery) -> list[Any]:
    return [
        prefix,
        new.event_id,
        new.event_type,
        new.app_id,
        new.session_id,
        new.body,
        repr(new.created_at),
    ]


class _Queued:
    """One script call for the writer; ``done`` gets its reply (or the OutboxError) on ``loop``."""

    __slots__ = ("args", "done", "loop", "script", "what")

    def __init__(
        self,
        script: Script | None,
        args: list[Any],
        what: str,
        done: Reply,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.script = script  # None: a marker, done once everything queued before it is
        self.args = args
        self.what = what
        self.done = done
        self.loop = loop


class _Writer:
    """One thread and one connection running queued script calls in pipelines, first in first out."""

    def __init__(self, client: redis.Redis, gate: _Gate) -> None:
        self._redis = client
        self._gate = gate
        self._queue: deque[_Queued] = deque()
        self._wanted = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None

    def put(self, item: _Queued) -> None:
        with self._wanted:
            if self._closing:
                raise OutboxError("the outbox is closed")
            self._queue.append(item)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="redis-outbox-writer", daemon=True)
                self._thread.start()
            self._wanted.notify()

    def close(self, timeout_s: float) -> None:
        """Run what is queued (each batch bounded by the timeouts), then stop."""
        with self._wanted:
            self._closing = True
            self._wanted.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._wanted:
                while not self._queue and not self._closing:
                    self._wanted.wait()
                if not self._queue:
                    return
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), _BATCH_MAX))]
            calls = [item for item in batch if item.script is not None]
            replies: list[Any]
            try:
                replies = self._send(calls) if calls else []
            except OutboxError as exc:
                replies = [OutboxError(f"{item.what}: {exc}") for item in calls]
            except Exception as exc:  # noqa: BLE001 - the thread must go on; the calls are reported failed
                replies = [OutboxError(f"{item.what}: {type(exc).__name__}: {exc}") for item in calls]
            self._report(batch, iter(replies))

    def _send(self, calls: list[_Queued]) -> list[Any]:
        """One round trip (two if Redis had lost its scripts: a restart, SCRIPT FLUSH)."""
        replies: list[Any] = [OutboxError(f"{item.what}: no reply") for item in calls]
        todo = list(range(len(calls)))
        for _ in range(2):
            pipe = self._redis.pipeline(transaction=False)
            for i in todo:
                script = calls[i].script
                assert script is not None
                pipe.evalsha(script.sha, 0, *calls[i].args)
            got = self._gate.call("", pipe.execute, raise_on_error=False)
            missing = []
            for i, reply in zip(todo, got, strict=True):
                if isinstance(reply, redis.exceptions.NoScriptError):
                    missing.append(i)
                elif isinstance(reply, redis.RedisError):
                    replies[i] = OutboxError(f"{calls[i].what}: {reply}")
                else:
                    replies[i] = reply
            if not missing:
                break
            lost = {id(s): s for s in (calls[i].script for i in missing) if s is not None}
            for lost_script in lost.values():
                self._gate.call("", self._redis.script_load, lost_script.script)
            todo = missing
        return replies

    @staticmethod
    def _report(batch: list[_Queued], replies: Any) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Reply, Any]]] = {}
        for item in batch:
            reply = next(replies) if item.script is not None else None
            by_loop.setdefault(item.loop, []).append((item.done, reply))
        for loop, outcomes in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, outcomes)
            except RuntimeError:
                log.error("%d Redis outbox results are lost: their event loop is closed", len(outcomes))


def _deliver(outcomes: list[tuple[Reply, Any]]) -> None:
    for done, reply in outcomes:
        try:
            done(reply)
        except Exception:
            log.exception("reporting a Redis outbox result failed")


class _Gate:
    """Runs Redis calls; every failure becomes an OutboxError, and a timeout fails the next ones
    at once for ``_COOL_OFF_S`` rather than each waiting out the timeout again."""

    def __init__(self, where: str) -> None:
        self.where = where
        self._down_until = 0.0

    def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``what`` starts the error's message (none: the caller names the calls itself)."""
        said = f"{what}: " if what else ""
        if time.monotonic() < self._down_until:
            raise OutboxError(f"{said}Redis at {self.where} is unreachable (timed out just now)")
        try:
            return fn(*args, **kwargs)
        except redis.TimeoutError as exc:
            self._down_until = time.monotonic() + _COOL_OFF_S
            raise OutboxError(f"{said}Redis at {self.where} did not answer in time: {exc}") from exc
        except redis.ConnectionError as exc:
            raise OutboxError(f"{said}Redis at {self.where} is unreachable: {exc}") from exc
        except redis.RedisError as exc:
            raise OutboxError(f"{said}{exc}") from exc


class RedisOutbox:
    """The outbox of a cluster of replicas. Use it from the event loop only.

    ``lease_token(app_id)`` says whether, and with which token, this replica
    delivers an application now; ``leases.py`` keeps it current. Reads and
    writes of the API and ``add`` need no lease.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout_s: float = 1.0,
        lease_token: Any = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        # One connection (calls come from the loop, one at a time); one
        # reconnect on a dead connection (Redis restarted), no more, and no
        # retry after a timeout (that would hold the loop twice as long). Every
        # script is safe to run twice: add and record_attempt are idempotent.
        try:
            self._redis = self._client(url, timeout_s)
            # The writer thread's own connection (a client is not shared between threads).
            writer_client = self._client(url, timeout_s)
        except (redis.RedisError, ValueError) as exc:
            raise OutboxError(f"cluster.redis_url: Redis is unreachable: {exc}") from exc
        self._timeout_s = timeout_s
        kwargs = self._redis.connection_pool.connection_kwargs
        self._gate = _Gate(f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}")
        self._lease_token = lease_token if lease_token is not None else (lambda app_id: None)
        r = self._redis
        self._add = r.register_script(_ADD)
        self._writer = _Writer(writer_client, _Gate(self._gate.where))
        # Attempts recorded through the writer and not acknowledged yet (seq -> app): not
        # claimed again meanwhile. Their failures, raised by the lane's next claim.
        self._recording: dict[int, str] = {}
        self._record_failures: dict[str, OutboxError] = {}
        self._apps: dict[int, str] = {}  # seq -> app of the deliveries claimed (spares a read)
        self._on_recorded: Callable[[str], None] = lambda app_id: None
        self._record = r.register_script(_RECORD)
        self._fail_pending = r.register_script(_FAIL_PENDING)
        self._requeue = r.register_script(_REQUEUE)
        self._prune = r.register_script(_PRUNE)
        self._due = r.register_script(_DUE)
        self._next_due = r.register_script(_NEXT_DUE)
        self._claim = r.register_script(_CLAIM)
        self._pending_apps = r.register_script(_PENDING_APPS)

    @staticmethod
    def _client(url: str, timeout_s: float) -> redis.Redis:
        # One connection per thread; one reconnect on a dead connection (Redis
        # restarted), no more, and no retry after a timeout (that would hold the
        # loop twice as long). Every script is safe to run twice: add and
        # record_attempt are idempotent.
        return redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
            single_connection_client=True,
        )

    def set_lease_source(self, lease_token: Any) -> None:
        """``lease_token(app_id) -> str | None``: the token of a lease held now."""
        self._lease_token = lease_token

    def set_recorded_callback(self, on_recorded: Callable[[str], None]) -> None:
        """``on_recorded(app_id)`` once an attempt of that application is recorded (or failed to be):
        its lane can claim again."""
        self._on_recorded = on_recorded

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one Redis call; every Redis failure becomes an OutboxError naming ``what``."""
        return self._gate.call(what, fn, *args, **kwargs)

    def ping(self) -> None:
        self._call("ping", self._redis.ping)

    def durability_warnings(self) -> list[str]:
        """What in Redis's settings breaks the promise that an acknowledged event is kept.

        Empty when the settings cannot be read (managed services often refuse CONFIG).
        """
        settings: dict[str, str] = {}
        try:
            for name in ("appendonly", "appendfsync", "maxmemory-policy"):  # one by one: Redis < 7
                for key, value in self._redis.config_get(name).items():
                    settings[_str(key)] = _str(value)
        except redis.RedisError:
            return []
        warnings = []
        if settings.get("appendonly") == "no":
            warnings.append(
                "appendonly is no: a Redis restart loses every stored webhook (want appendonly yes)"
            )
        elif settings.get("appendfsync") == "no":
            warnings.append("appendfsync is no: a crash of the Redis host can lose acknowledged webhooks")
        policy = settings.get("maxmemory-policy", "noeviction")
        if policy != "noeviction":
            warnings.append(
                f"maxmemory-policy is {policy}: Redis may evict stored webhooks (want noeviction)"
            )
        return warnings

    def close(self) -> None:
        """Store what is still queued (bounded by the timeouts), then let the connections go."""
        self._writer.close(timeout_s=4 * self._timeout_s + 1)
        self._redis.close()

    # -- the write path -------------------------------------------------

    def add_soon(self, new: NewDelivery, done: Done) -> None:
        """Queue one event for the writer; ``done`` gets its ``AddResult`` on this loop.

        Without a running loop (a script) the event is stored before this returns.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            try:
                result: AddResult = self.add(new)
            except OutboxError as exc:
                result = exc
            done(result)
            return

        def stored(reply: Any) -> None:
            done(reply if isinstance(reply, OutboxError) else int(reply) > 0)

        what = f"storing event {new.event_id}"
        try:
            self._writer.put(_Queued(self._add, _add_args(self.prefix, new), what, stored, loop))
        except OutboxError as exc:
            done(OutboxError(f"{what}: {exc}"))

    async def flush(self) -> None:
        """Wait until every event and attempt queued before this call is stored or reported lost."""
        with contextlib.suppress(OutboxError):  # closed: nothing can be queued any more
            await self._through_writer(None, [], "")

    async def _through_writer(self, script: Script | None, args: list[Any], what: str) -> Any:
        """Run ``script`` behind everything queued for the writer; its reply (or OutboxError).

        ``script`` None: only wait for what was queued before.
        """
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()

        def arrived(reply: Any) -> None:
            if not answer.done():
                answer.set_result(reply)

        try:
            self._writer.put(_Queued(script, args, what, arrived, loop))
        except OutboxError as exc:
            raise OutboxError(f"{what}: {exc}") from exc
        return await answer

    def add(self, new: NewDelivery) -> bool:
        """Store one event; returns once Redis acknowledged it. False if its id was stored already."""
        seq = self._call(f"storing event {new.event_id}", self._add, args=_add_args(self.prefix, new))
        return int(seq) > 0

    def record_attempt(
        self, seq: int, attempt: AttemptRecord, *, next_attempt_at: float | None = None, last_error: str
    ) -> None:
        """Log an attempt and apply its outcome atomically; only under the application's lease.

        On the loop the record goes through the writer, like the SQLite outbox's group
        commit: the delivery is not claimed again until Redis has acknowledged it, and a
        failure is raised by the application's next ``due`` (its lane backs off; the
        delivery stays pending and is sent again, as after a crash before the record).
        """
        if attempt.outcome is Outcome.RETRY and next_attempt_at is None:
            raise ValueError("a retry needs next_attempt_at")
        app_id = self._apps.get(seq) or self._app_of(seq)
        token = self._lease_token(app_id)
        if token is None:
            raise OutboxError(f"delivery {seq}: this replica does not hold the lease of {app_id}")
        record = json.dumps(
            {
                "attempt": attempt.attempt,
                "started_at": attempt.started_at,
                "url": attempt.url,
                "status_code": attempt.status_code,
                "error": attempt.error,
                "latency_ms": attempt.latency_ms,
                "outcome": attempt.outcome.value,
            }
        )
        args = [
            self.prefix,
            seq,
            token,
            record,
            attempt.attempt,
            attempt.outcome.value,
            repr(next_attempt_at) if next_attempt_at is not None else "",
            last_error,
            "" if attempt.status_code is None else attempt.status_code,
            repr(attempt.started_at + attempt.latency_ms / 1000),
        ]
        what = f"recording an attempt of delivery {seq}"
        if attempt.outcome is not Outcome.RETRY:
            self._apps.pop(seq, None)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._call(what, self._record, args=args)
            return

        def recorded(reply: Any) -> None:
            if self._recording.get(seq) == app_id:
                del self._recording[seq]
            if isinstance(reply, OutboxError):
                log.error("%s; the delivery stays pending", reply)
                self._record_failures[app_id] = reply
            self._on_recorded(app_id)

        self._recording[seq] = app_id
        try:
            self._writer.put(_Queued(self._record, args, what, recorded, loop))
        except OutboxError:
            del self._recording[seq]
            raise

    def _app_of(self, seq: int) -> str:
        app = self._call(f"reading delivery {seq}", self._redis.hget, f"{self.prefix}d:{seq}", "app_id")
        if app is None:
            raise OutboxError(f"delivery {seq} is unknown")
        return str(app.decode())

    def fail_pending(self, app_id: str, reason: str, now: float) -> int:
        """Fail every pending delivery of an application without an attempt (it lost its URL)."""
        return int(
            self._call(
                f"failing the pending webhooks of {app_id}",
                self._fail_pending,
                args=[self.prefix, app_id, reason, repr(now)],
            )
        )

    def requeue(self, app_id: str, event_id: str, now: float) -> DeliveryRecord | None:
        """Queue a finished delivery again with a fresh budget; None if it is unknown.

        Raises ``ValueError`` when it is still pending.
        """
        result = int(
            self._call(
                f"redelivering {event_id}", self._requeue, args=[self.prefix, app_id, event_id, repr(now)]
            )
        )
        if result == -1:
            return None
        if result == -2:
            raise ValueError("the delivery is still pending")
        return self.get(app_id, event_id)

    def prune(self, status: DeliveryStatus, finished_before: float, limit: int) -> int:
        """Delete up to ``limit`` finished deliveries (and their attempts); returns how many."""
        if status is DeliveryStatus.PENDING:
            raise ValueError("pending deliveries are never pruned")
        return int(
            self._call(
                "pruning deliveries",
                self._prune,
                args=[self.prefix, status.value, repr(finished_before), limit],
            )
        )

    # -- the dispatcher's reads -----------------------------------------

    def due(self, app_id: str, now: float, limit: int, exclude: Collection[int] = ()) -> list[DueDelivery]:
        """Session heads of one application due by ``now``; none without its lease."""
        asked = self._claim_args(app_id, now, limit, exclude)
        if asked is None:
            return []
        rows = self._call(f"claiming webhooks of {app_id}", self._due, args=asked[1])
        if rows is None:
            return []  # the lease went in the meantime; leases.py notices on its next turn
        return self._claimed(app_id, rows)

    def _claimed(self, app_id: str, rows: list[list[Any]]) -> list[DueDelivery]:
        if len(self._apps) > _APPS_KEPT:
            self._apps.clear()  # claims abandoned with a lease; a miss costs a read, no more
        for row in rows:
            self._apps[int(row[0])] = app_id
        return [
            DueDelivery(
                seq=int(row[0]),
                event_id=_text(row[1]),
                app_id=_text(row[2]),
                session_id=_text(row[3]),
                body=bytes(row[4]),
                next_attempt_at=float(row[5]),
                round_started_at=float(row[6]),
                round_attempts=int(row[7]),
                attempts=int(row[8]),
            )
            for row in rows
        ]

    def next_due(self, app_id: str, exclude: Collection[int] = ()) -> float | None:
        """When the earliest head (not in ``exclude``) is due; None without the lease."""
        if self._lease_token(app_id) is None:
            return None
        at = self._call(
            f"reading the webhook queue of {app_id}",
            self._next_due,
            args=[self.prefix, app_id, *self._excluded(app_id, exclude)],
        )
        return None if at is None else float(at)

    async def claim(self, app_id: str, now: float, limit: int, exclude: Collection[int]) -> Claim:
        """``due`` and ``next_due`` in one round trip, through the writer: the loop waits for
        none of it, and the claim sees every attempt queued before it recorded."""
        asked = self._claim_args(app_id, now, limit, exclude)
        if asked is None:
            return Claim((), None)
        token, args = asked
        reply = await self._through_writer(self._claim, args, f"claiming webhooks of {app_id}")
        if isinstance(reply, OutboxError):
            raise reply
        # Nothing without the lease, nor if it went while the claim was on its way
        # (its lane's attempts were abandoned then).
        if reply is None or self._lease_token(app_id) != token:
            return Claim((), None)
        rows, at = reply
        return Claim(self._claimed(app_id, rows), None if at is None else float(at))

    def _claim_args(
        self, app_id: str, now: float, limit: int, exclude: Collection[int]
    ) -> tuple[str, list[Any]] | None:
        """The lease token and the arguments of a claim script; None without the lease.

        Raises the failure of an attempt record of ``app_id`` not reported yet (its lane backs off).
        """
        failure = self._record_failures.pop(app_id, None)
        if failure is not None:
            raise failure
        token = self._lease_token(app_id)
        if token is None:
            return None
        return token, [self.prefix, app_id, token, repr(now), limit, *self._excluded(app_id, exclude)]

    def _excluded(self, app_id: str, exclude: Collection[int]) -> list[int]:
        """``exclude`` and the deliveries whose attempt is being recorded: not due again yet."""
        recording = [seq for seq, app in self._recording.items() if app == app_id]
        return [*exclude, *recording] if recording else list(exclude)

    def pending_count(self) -> int:
        return int(self._call("counting pending webhooks", self._redis.zcard, f"{self.prefix}pending"))

    def oldest_pending_since(self) -> float | None:
        rows = self._call(
            "reading the oldest pending webhook",
            self._redis.zrange,
            f"{self.prefix}pending",
            0,
            0,
            withscores=True,
        )
        return float(rows[0][1]) if rows else None

    def pending_apps(self) -> set[str]:
        apps = self._call(
            "listing applications with pending webhooks", self._pending_apps, args=[self.prefix]
        )
        return {_text(app) for app in apps}

    # -- the API's reads ------------------------------------------------

    def get(self, app_id: str, event_id: str) -> DeliveryRecord | None:
        """One delivery of one application, with its body and attempts."""
        seq = self._call(f"reading delivery {event_id}", self._redis.hget, f"{self.prefix}ids", event_id)
        if seq is None:
            return None
        pipe = self._redis.pipeline(transaction=True)
        pipe.hmget(f"{self.prefix}d:{int(seq)}", [*_DETAIL_FIELDS, "body"])
        pipe.lrange(f"{self.prefix}att:{int(seq)}", 0, -1)
        values, attempts = self._call(f"reading delivery {event_id}", pipe.execute)
        if values[0] is None or _text(values[2]) != app_id:
            return None
        record = _detail(int(seq), values[:-1])
        parsed = tuple(
            AttemptRecord(
                attempt=int(a["attempt"]),
                started_at=float(a["started_at"]),
                url=str(a["url"]),
                status_code=a["status_code"],
                error=str(a["error"]),
                latency_ms=float(a["latency_ms"]),
                outcome=Outcome(a["outcome"]),
            )
            for a in map(json.loads, attempts)
        )
        return dataclasses.replace(record, body=bytes(values[-1] or b""), attempts=parsed)

    def list_deliveries(
        self, app_id: str, status: DeliveryStatus, limit: int, before_seq: int | None = None
    ) -> Sequence[DeliveryRecord]:
        """Deliveries of one application in one status, newest first."""
        top = "+inf" if before_seq is None else f"({before_seq}"
        seqs = self._call(
            f"listing {status.value} webhooks of {app_id}",
            self._redis.zrevrangebyscore,
            f"{self.prefix}l:{status.value}:{app_id}",
            top,
            "-inf",
            start=0,
            num=limit,
        )
        if not seqs:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for seq in seqs:
            pipe.hmget(f"{self.prefix}d:{int(seq)}", list(_DETAIL_FIELDS))
        rows = self._call(f"listing {status.value} webhooks of {app_id}", pipe.execute)
        return [_detail(int(seq), row) for seq, row in zip(seqs, rows, strict=True) if row[0] is not None]
