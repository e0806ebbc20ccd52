"""The session directory: which replica holds each call's socket, and which holds each operation.

Keys (all under ``callcontrol:``):
* ``session:{id}``  hash owner, app, state, created_at, answered_at; kept while
  the call lives and ``ENDED_TTL_S`` after it ends, so a late or repeated
  command still reaches the replica that knows its answer. A live entry expires
  ``LIVE_TTL_S`` after its owner last refreshed it (``refresh``, a few times per
  TTL while the owner holds the call): a call may last any time, and the entries
  of a replica that died with nobody adopting its calls still go away.
  ``state = disconnected`` is the tombstone that lets a re-delivered socket go.
* ``operation:{id}`` the owner replica id, for as long as operations are kept.
* ``session-ops:{id}`` the session's operations in progress (id → JSON), so the
  replica that adopts the call can end them ``failed`` if their replica died.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import redis.asyncio as redis

from callcontrol.cluster.store import PREFIX, text
from callcontrol.operations import Operation, Status

LIVE_TTL_S = 24 * 3600  # since the owner's last refresh; then a dead owner's entries go away
ENDED_TTL_S = 3600
OPERATION_TTL_S = 24 * 3600


@dataclass(frozen=True, slots=True)
class SessionEntry:
    session_id: str
    owner: str
    app_id: str
    state: str
    created_at: datetime | None = None
    answered_at: datetime | None = None
    #: call.answered was published (it fires once per call, whichever replica holds it)
    answer_reported: bool = False

    @property
    def ended(self) -> bool:
        return self.state in ("hangup", "disconnected")


def _session_key(session_id: str) -> str:
    return f"{PREFIX}session:{session_id}"


def _operation_key(operation_id: str) -> str:
    return f"{PREFIX}operation:{operation_id}"


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


# Written only by the owner (or by the replica taking over from ``ARGV[2]``), in
# one step, so a replica that lost a call can never overwrite its adopter's entry.
_PUT_SESSION = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] and owner ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'app', ARGV[3], 'state', ARGV[4],
           'created_at', ARGV[5], 'answered_at', ARGV[6], 'answer_reported', ARGV[8])
redis.call('EXPIRE', KEYS[1], ARGV[7])
return 1
"""


# KEYS: session keys; ARGV: owner, ttl. Only the owner's live entries: never one
# another replica adopted since, nor an ended one (that keeps its ENDED_TTL_S).
_REFRESH = """
local n = 0
for _, key in ipairs(KEYS) do
    local f = redis.call('HMGET', key, 'owner', 'state')
    if f[1] == ARGV[1] and f[2] ~= 'hangup' and f[2] ~= 'disconnected' then
        redis.call('EXPIRE', key, ARGV[2])
        n = n + 1
    end
end
return n
"""
_REFRESH_BATCH = 500


class Directory:
    def __init__(self, client: redis.Redis, live_ttl_s: int = LIVE_TTL_S) -> None:
        self._redis = client
        self.live_ttl_s = live_ttl_s
        self._put_session = client.register_script(_PUT_SESSION)
        self._refresh = client.register_script(_REFRESH)

    async def put_session(self, entry: SessionEntry, *, taking_over_from: str = "") -> bool:
        """Record the entry; False when another replica holds the session now."""
        written = await self._put_session(
            keys=[_session_key(entry.session_id)],
            args=[
                entry.owner,
                taking_over_from or entry.owner,
                entry.app_id,
                entry.state,
                entry.created_at.isoformat() if entry.created_at else "",
                entry.answered_at.isoformat() if entry.answered_at else "",
                ENDED_TTL_S if entry.ended else self.live_ttl_s,
                "1" if entry.answer_reported else "",
            ],
        )
        return bool(written)

    async def refresh(self, owner: str, session_ids: list[str]) -> int:
        """Restart the TTL of the owner's live entries; returns how many it held still."""
        refreshed = 0
        for start in range(0, len(session_ids), _REFRESH_BATCH):
            keys = [_session_key(s) for s in session_ids[start : start + _REFRESH_BATCH]]
            refreshed += int(await self._refresh(keys=keys, args=[owner, self.live_ttl_s]))
        return refreshed

    async def session(self, session_id: str) -> SessionEntry | None:
        raw = {text(k): text(v) for k, v in (await self._redis.hgetall(_session_key(session_id))).items()}
        owner = raw.get("owner")
        if not owner:
            return None
        return SessionEntry(
            session_id=session_id,
            owner=owner,
            app_id=raw.get("app") or "",
            state=raw.get("state") or "",
            created_at=_time(raw.get("created_at")),
            answered_at=_time(raw.get("answered_at")),
            answer_reported=raw.get("answer_reported") == "1",
        )

    async def put_operation(self, operation_id: str, owner: str) -> None:
        await self._redis.set(_operation_key(operation_id), owner, ex=OPERATION_TTL_S)

    async def operation_owner(self, operation_id: str) -> str | None:
        return text(await self._redis.get(_operation_key(operation_id)))


def _session_ops_key(session_id: str) -> str:
    return f"{PREFIX}session-ops:{session_id}"


class InFlight:
    """Operations in progress per session, recorded by their owner until they end."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    async def started(self, op: Operation) -> None:
        record = {
            "app": op.app_id,
            "command": op.command,
            "uid": op.command_uid,
            "timeout_ms": op.timeout_ms,
            "created_at": op.created_at.isoformat(),
        }
        key = _session_ops_key(op.session_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, op.operation_id, json.dumps(record))
            pipe.expire(key, LIVE_TTL_S)
            await pipe.execute()

    async def finished(self, session_id: str, operation_id: str) -> None:
        await self._redis.hdel(_session_ops_key(session_id), operation_id)

    async def take(
        self, session_id: str, finished_at: datetime, reason: str, message: str
    ) -> list[Operation]:
        """Remove and return the session's operations in progress, ended ``failed``."""
        key = _session_ops_key(session_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(key)
            pipe.delete(key)
            raw, _ = await pipe.execute()
        ops = []
        for op_id, text_ in raw.items():
            record = json.loads(text_)
            ops.append(
                Operation(
                    operation_id=str(op_id),
                    app_id=str(record["app"]),
                    session_id=session_id,
                    command=str(record["command"]),
                    command_uid=str(record["uid"]),
                    timeout_ms=int(record["timeout_ms"]),
                    created_at=datetime.fromisoformat(record["created_at"]),
                    status=Status.FAILED,
                    finished_at=finished_at,
                    reason=reason,
                    message=message,
                )
            )
        return ops
