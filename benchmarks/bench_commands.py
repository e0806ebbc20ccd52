"""Command latency and throughput through the real gateway, against a baseline.

One run, in one process, on loopback: the FreeSWITCH simulator places CALLS
calls; each is answered (RPC → execute-complete → command.result) and hung up
(RPC → +OK → command.result). The baseline is a plain gRPC health Check to the
same server, so the ratios say what the gateway adds over gRPC itself on this
(noisy, 2-core) machine. It also checks that finished operations stay bounded.

    .venv/bin/python benchmarks/bench_commands.py [--calls 300]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import tracemalloc

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from callcontrol.config import (
    DEMO_API_KEY,
    DEMO_APP_ID,
    Address,
    EslConfig,
    GatewayConfig,
    WebhookConfig,
    demo_application,
)
from callcontrol.events import CallInitiated, CommandResult
from callcontrol.gateway import Gateway
from callcontrol.operations import OperationStore, Status
from callcontrol.simulator import FreeSwitchSimulator
from callcontrol.v1 import commands_pb2, commands_pb2_grpc

AUTH = (("x-app-id", DEMO_APP_ID), ("x-api-key", DEMO_API_KEY))


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


async def _commands(calls: int) -> None:
    cfg = GatewayConfig(
        grpc_listen=Address("127.0.0.1", 0),
        esl=EslConfig(listen=Address("127.0.0.1", 0)),
        webhooks=WebhookConfig(outbox_path=":memory:"),
        metrics_listen=None,
        applications=(demo_application(),),
    )
    async with Gateway(cfg) as gw:
        assert gw.grpc_address is not None
        assert gw.esl_address is not None
        sim = FreeSwitchSimulator(gw.esl_address.host, gw.esl_address.port)
        sub = gw.events.subscribe()
        placed = [await sim.place_call(answer_delay=0.0) for _ in range(calls)]
        ready = 0
        while ready < calls:
            ready += isinstance(await sub.get(), CallInitiated)
        # The outcome can be published before the RPC's response reaches us
        # (hangup: FreeSWITCH's +OK), so one future per operation id, made by
        # whichever side comes first.
        results: dict[str, asyncio.Future[float]] = {}

        def outcome(op_id: str) -> asyncio.Future[float]:
            return results.setdefault(op_id, asyncio.get_running_loop().create_future())

        async def pump() -> None:
            async for event in sub:
                if isinstance(event, CommandResult):
                    outcome(event.operation_id).set_result(time.perf_counter())

        pumping = asyncio.create_task(pump())
        async with grpc.aio.insecure_channel(str(gw.grpc_address)) as ch:
            stub = commands_pb2_grpc.SessionCommandsStub(ch)
            health = health_pb2_grpc.HealthStub(ch)
            for _ in range(50):  # warm-up
                await health.Check(health_pb2.HealthCheckRequest())
            baseline = []
            for _ in range(calls):
                t0 = time.perf_counter()
                await health.Check(health_pb2.HealthCheckRequest())
                baseline.append(time.perf_counter() - t0)

            async def run(rpc: str, request: object) -> tuple[float, float]:
                t0 = time.perf_counter()
                env = await getattr(stub, rpc)(request, metadata=AUTH)
                accepted = time.perf_counter() - t0
                done = await outcome(env.operation_id)
                return accepted, done - t0

            answers = [await run("Answer", commands_pb2.AnswerRequest(session_id=c.uuid)) for c in placed]
            hangups = [await run("Hangup", commands_pb2.HangupRequest(session_id=c.uuid)) for c in placed]
            # Throughput: all calls of a second batch at once.
            with gw.events.subscribe() as batch:
                more = [await sim.place_call(answer_delay=0.0) for _ in range(calls)]
                ready = 0
                while ready < calls:
                    ready += isinstance(await batch.get(), CallInitiated)
            t0 = time.perf_counter()
            await asyncio.gather(
                *(run("Answer", commands_pb2.AnswerRequest(session_id=c.uuid)) for c in more)
            )
            burst = time.perf_counter() - t0
        pumping.cancel()
        await sim.close()

    base = statistics.median(baseline)
    print(f"calls: {calls}")
    print(f"baseline gRPC health Check     p50 {base * 1e3:7.3f} ms")
    for name, rows in (("answer", answers), ("hangup", hangups)):
        acc = [a for a, _ in rows]
        out = [d for _, d in rows]
        print(
            f"{name:6} accepted (RPC)         p50 {statistics.median(acc) * 1e3:7.3f} ms  "
            f"p99 {_pct(acc, 99) * 1e3:7.3f} ms  ratio p50/baseline {statistics.median(acc) / base:5.2f}"
        )
        print(
            f"{name:6} outcome (command.result) p50 {statistics.median(out) * 1e3:7.3f} ms  "
            f"p99 {_pct(out, 99) * 1e3:7.3f} ms  ratio p50/baseline {statistics.median(out) / base:5.2f}"
        )
    print(f"burst: {calls} concurrent answers confirmed in {burst * 1e3:.0f} ms ({calls / burst:.0f}/s)")


async def _retention(total: int, retention: int) -> None:
    store = OperationStore(retention_per_app=retention, on_finished=lambda op: None)
    tracemalloc.start()
    peak_at = {}
    for n in range(total):
        op = store.start(app_id="a", session_id="s", command="hangup", command_uid=f"u{n}", timeout_ms=2000)
        store.finish(op.operation_id, Status.SUCCEEDED)
        if n % 1000 == 0:
            await asyncio.sleep(0)  # let the loop purge cancelled deadline timers, as it does in service
        if n + 1 in (retention, total):
            peak_at[n + 1] = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(
        f"operations retained after {total}: {len(store)} (bound {retention}); memory at {retention}: "
        f"{peak_at[retention] / 1e6:.1f} MB, at {total}: {peak_at[total] / 1e6:.1f} MB "
        f"(ratio {peak_at[total] / peak_at[retention]:.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--operations", type=int, default=100_000)
    args = parser.parse_args()
    asyncio.run(_commands(args.calls))
    asyncio.run(_retention(args.operations, 10_000))


if __name__ == "__main__":
    main()
