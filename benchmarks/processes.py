"""Starting and talking to the bench's processes, from the orchestrator's side."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import IO, Any

from benchmarks import procstat
from callcontrol import die_with_parent
from callcontrol.child_process import terminate

Json = dict[str, Any]
REPO = Path(__file__).resolve().parent.parent


def child_env(server: Path | None = None) -> dict[str, str]:
    """The children's environment; ``server``: another tree's gateway code (A/B runs)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, (str(server or REPO / "server"), str(REPO), str(REPO / "server"), env.get("PYTHONPATH")))
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ChildError(RuntimeError):
    pass


class Child:
    """A ``benchmarks.*`` child speaking JSON lines (see ``benchmarks.worker``)."""

    def __init__(self, name: str, module: str, args: list[str], log_dir: Path) -> None:
        self.name = name
        self._argv = [sys.executable, "-m", module, *args]
        self._log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self.hello: Json = {}

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    async def start(self, timeout: float = 30.0) -> Json:  # noqa: ASYNC109
        self._log = self._log_path.open("ab")
        self._proc = await asyncio.create_subprocess_exec(
            *die_with_parent.wrap(list(self._argv)),  # no orphans if the bench is killed
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._log,
            env=child_env(),
            cwd=REPO,
            limit=64 * 1024 * 1024,
        )
        self.hello = await self._read(timeout)
        return self.hello

    async def _read(self, timeout: float) -> Json:  # noqa: ASYNC109
        assert self._proc is not None
        assert self._proc.stdout is not None
        line = await asyncio.wait_for(self._proc.stdout.readline(), timeout)
        if not line:
            raise ChildError(f"{self.name} exited (rc {await self._proc.wait()}); see {self._log_path}")
        reply: Json = json.loads(line)
        if not reply.pop("ok", False):
            raise ChildError(f"{self.name}: {reply.get('error')} (log: {self._log_path})")
        return reply

    async def call(self, op: str, timeout: float = 600.0, **args: Any) -> Json:  # noqa: ASYNC109
        async with self._lock:
            assert self._proc is not None
            assert self._proc.stdin is not None
            self._proc.stdin.write(json.dumps({"op": op, **args}).encode() + b"\n")
            await self._proc.stdin.drain()
            return await self._read(timeout)

    async def stop(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(Exception):
            await self.call("quit", timeout=5.0)
        await terminate(proc, 15.0)
        if self._log is not None:
            self._log.close()


class GatewayProcess:
    """``python -m callcontrol --config FILE``: the gateway and its Envoy, as in production."""

    BANNER = "call-control gateway is running"

    def __init__(self, config: Path, log_path: Path, server: Path | None = None) -> None:
        self._config = config
        self._log_path = log_path
        self._server = server
        self._proc: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def envoy_pid(self) -> int | None:
        kids = procstat.children(self.pid)
        return kids[0] if kids else None

    async def start(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109
        with self._log_path.open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                *die_with_parent.wrap([sys.executable, "-m", "callcontrol", "--config", str(self._config)]),
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=child_env(self._server),
                cwd=REPO,
            )
        assert self._proc.stdout is not None
        stdout = self._proc.stdout

        async def ready() -> None:
            while line := await stdout.readline():
                if self.BANNER in line.decode(errors="replace"):
                    return
            raise ChildError(f"gateway exited (rc {await self._proc.wait()}); see {self._log_path}")  # type: ignore[union-attr]

        await asyncio.wait_for(ready(), timeout)

        async def drain() -> None:
            while await stdout.readline():
                pass

        self._drain = asyncio.create_task(drain())

    async def stop(self) -> None:
        if self._proc is not None:
            await terminate(self._proc, 30.0)
        if self._drain is not None:
            await self._drain
