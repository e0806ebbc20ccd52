"""Run the whole stack in one process tree: gateway, Envoy, and in demo mode
the FreeSWITCH simulator and a webhook receiver that prints what it gets.

Start order: receiver → gateway → Envoy (waits until healthy) → simulated
calls. Stop order: Envoy → gateway (its sockets close, so the calls go back to
their dialplan; its last events are in the outbox) → simulator → receiver.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path

from callcontrol.config import DEMO_API_KEY, DEMO_APP_ID, ConfigError, GatewayConfig, is_demo
from callcontrol.gateway import Gateway
from callcontrol.rest.envoy_process import EnvoyError
from callcontrol.startup import StartupError, ensure_bindable, envoy_cause, one_line
from callcontrol.webhooks.outbox import OutboxError

log = logging.getLogger(__name__)


def _banner(
    cfg: GatewayConfig, rest_url: str | None, grpc: str, session_ids: list[str], esl: str | None = None
) -> str:
    """What is running. Demo credentials and curl lines only when they work (demo mode)."""
    demo = is_demo(cfg)
    sid = session_ids[0] if session_ids else "<session uuid>"
    base = rest_url or "(REST disabled: --no-envoy)"
    grpc_scheme = "TLS" if cfg.grpc_tls.enabled else "plaintext"
    lines = [
        "",
        f"call-control gateway {'demo ' if demo else ''}is running",
        f"  REST (Envoy)   {base}",
        f"  gRPC           {grpc} ({grpc_scheme})",
    ]
    if demo:
        lines.append(f"  demo app       X-App-ID: {DEMO_APP_ID}   X-API-Key: {DEMO_API_KEY}")
    else:
        apps = ", ".join(a.app_id for a in cfg.applications)
        lines.append(f"  applications   {apps}")
    if cfg.simulator:
        lines += [f"  simulated call {s}" for s in session_ids]
    else:
        lines.append(
            f"  FreeSWITCH     connects to {esl or cfg.esl.listen} (dialplan: socket ... async full)"
        )
    if rest_url and demo:
        lines += [
            "",
            "answer the simulated call:",
            f"  curl -i -X POST {rest_url}/api/v1/sessions/{sid}/commands/answer \\",
            f'    -H "X-App-ID: {DEMO_APP_ID}" -H "X-API-Key: {DEMO_API_KEY}" \\',
            "    -H \"Content-Type: application/json\" -d '{}'",
            "then hang it up:",
            f"  curl -i -X POST {rest_url}/api/v1/sessions/{sid}/commands/hangup \\",
            f'    -H "X-App-ID: {DEMO_APP_ID}" -H "X-API-Key: {DEMO_API_KEY}" \\',
            '    -H "Content-Type: application/json" -d \'{"cause": "USER_BUSY"}\'',
        ]
    lines += ["", "Ctrl-C stops everything.", ""]
    return "\n".join(lines)


async def _with_demo_receiver(cfg: GatewayConfig, stack: AsyncExitStack) -> GatewayConfig:
    """Point the demo application at a local receiver unless it has a URL already."""
    app = cfg.application(DEMO_APP_ID)
    if app is None or app.webhook_url:
        return cfg
    from callcontrol.webhooks.demo_receiver import start_demo_receiver

    runner, url = await start_demo_receiver("127.0.0.1", 0, app.webhook_secrets)
    stack.push_async_callback(runner.cleanup)
    log.info("demo webhook receiver at %s (prints every webhook, signature verified)", url)
    apps = tuple(replace(a, webhook_url=url) if a.app_id == DEMO_APP_ID else a for a in cfg.applications)
    return replace(cfg, applications=apps)


async def run_stack(cfg: GatewayConfig, stop: asyncio.Event, *, envoy: bool, demo_calls: int) -> None:
    """Run until ``stop``. A failure to start raises StartupError naming its cause.

    Everything after start-up only waits for ``stop``, so the errors below can
    only come from starting (or from undoing a half-done start).
    """
    try:
        await _run_stack(cfg, stop, envoy=envoy, demo_calls=demo_calls)
    except (ConfigError, OutboxError) as exc:
        raise StartupError(str(exc)) from exc
    except EnvoyError as exc:
        cause = envoy_cause(str(exc))
        raise StartupError(f"envoy: {one_line(str(exc))}{f': {cause}' if cause else ''}") from exc


async def _run_stack(cfg: GatewayConfig, stop: asyncio.Event, *, envoy: bool, demo_calls: int) -> None:
    async with AsyncExitStack() as stack:
        if cfg.simulator:
            cfg = await _with_demo_receiver(cfg, stack)
        # Entered before the gateway so it closes after it: stopping the demo
        # hands the simulated calls back to their dialplan, as in production.
        simulators = await stack.enter_async_context(AsyncExitStack())
        gateway = Gateway(cfg)
        await gateway.start()
        stack.push_async_callback(gateway.shutdown)
        assert gateway.grpc_address is not None
        assert gateway.esl_address is not None

        rest_url = None
        if envoy:
            from callcontrol.rest.envoy_process import EnvoyProcess

            # Checked first for a clear message (the usual holder is the Envoy of
            # a gateway that crashed); Envoy's own bind error covers the race.
            ensure_bindable("rest.listen", cfg.rest.listen)
            ensure_bindable("rest.admin", cfg.rest.admin)
            run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="callcontrol-envoy-")))
            proxy = EnvoyProcess(cfg.rest, gateway.grpc_address, run_dir, upstream_tls=cfg.grpc_tls.enabled)
            await proxy.start()
            stack.push_async_callback(proxy.stop)
            await proxy.wait_healthy()
            rest_url = proxy.rest_url

        session_ids: list[str] = []
        if cfg.simulator:
            from callcontrol.simulator import FreeSwitchSimulator

            sim = FreeSwitchSimulator(gateway.esl_address.host, gateway.esl_address.port)
            simulators.push_async_callback(sim.close)
            for n in range(demo_calls):
                call = await sim.place_call(app_id=DEMO_APP_ID, caller_number=f"+1555000{n:04d}")
                session_ids.append(call.uuid)
        banner = _banner(cfg, rest_url, str(gateway.grpc_address), session_ids, str(gateway.esl_address))
        print(banner, flush=True)
        await stop.wait()
        log.info("stopping")
