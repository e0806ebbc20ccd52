"""The test Redis itself: real, durable across a restart on the same directory."""

from __future__ import annotations

import redis

from tests.redis_server import RedisServer


def test_an_acknowledged_write_survives_a_redis_restart(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.set("callcontrol:probe", "kept")
    client.close()
    redis_server.restart()
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.get("callcontrol:probe") == b"kept"
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
    finally:
        client.close()
