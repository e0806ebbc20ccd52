"""Live replicas: each registers its id → advertised gRPC address under a key that expires.

Redis's own expiry decides who is alive, so replicas need no shared clock: a
replica that stops beating disappears ``expiry_ms`` after its last heartbeat.
"""

from __future__ import annotations

import redis.asyncio as redis

from callcontrol.cluster.store import PREFIX, text

_REPLICAS = PREFIX + "replicas"  # set of ids ever registered (pruned when found dead)


def _key(replica_id: str) -> str:
    return f"{PREFIX}replica:{replica_id}"


class Membership:
    def __init__(self, client: redis.Redis, replica_id: str, expiry_ms: int) -> None:
        self._redis = client
        self.replica_id = replica_id
        self._expiry_ms = expiry_ms

    async def beat(self, address: str) -> str:
        """Register again; returns Redis's run id, which changes when Redis restarts."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(_key(self.replica_id), address, px=self._expiry_ms)
            pipe.sadd(_REPLICAS, self.replica_id)
            pipe.info("server")
            _, _, info = await pipe.execute()
        return str(info.get("run_id", ""))

    async def leave(self) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(_key(self.replica_id))
            pipe.srem(_REPLICAS, self.replica_id)
            await pipe.execute()

    async def address(self, replica_id: str) -> str | None:
        """The replica's address while it is alive; None once it has expired."""
        return text(await self._redis.get(_key(replica_id)))

    async def live(self) -> dict[str, str]:
        """Every live replica id → address (this one included)."""
        ids = sorted(t for t in map(text, await self._redis.smembers(_REPLICAS)) if t)
        if not ids:
            return {}
        addresses = [text(a) for a in await self._redis.mget([_key(i) for i in ids])]
        dead = [i for i, a in zip(ids, addresses, strict=True) if a is None]
        if dead:
            await self._redis.srem(_REPLICAS, *dead)
        return {i: a for i, a in zip(ids, addresses, strict=True) if a}
