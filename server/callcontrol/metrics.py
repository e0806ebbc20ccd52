"""The gateway's Prometheus metrics: one ``CollectorRegistry`` per ``Gateway``.

Each part records into a small object made here (the link into ``LinkMetrics``,
call control into ``CommandMetrics``, the interceptor into ``RpcMetrics``);
``prometheus_client`` keeps the values and renders the exposition. A registry
per gateway (not the library's global one) lets several gateways share a
process, as the tests do. Webhook metrics live in ``callcontrol.webhooks.metrics``
and join the same registry through ``include``.

Names follow Prometheus conventions: ``callcontrol_`` prefix, ``_total``
counters, ``_seconds`` histograms, labels only from small fixed sets (never
from peer or client text).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.metrics_core import Metric

NAMESPACE = "callcontrol"

RPC_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Answer confirmation ends at the operation deadline (2 s by default).
ANSWER_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 5.0)
ESL_REPLY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)

# Frame kinds a label may name; anything else FreeSWITCH sends counts as "other".
_FRAME_KINDS = frozenset(
    {
        "command/reply",
        "api/response",
        "text/event-plain",
        "text/disconnect-notice",
        "auth/request",
        "log/data",
    }
)


def new_registry() -> CollectorRegistry:
    """A fresh registry with the process, platform and GC collectors on it."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class _Included:
    """Collects another registry's metrics as part of this one."""

    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        return self._source.collect()


def include(registry: CollectorRegistry, source: CollectorRegistry) -> None:
    registry.register(_Included(source))


class RpcMetrics:
    """Rate, errors and duration of every RPC, direct or transcoded from REST.

    REST routes map one-to-one onto methods, so the method labels cover both.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("grpc_service", "grpc_method", "grpc_type")
        self._started = Counter(
            "grpc_server_started",
            "RPCs started on the server.",
            labels,
            namespace=NAMESPACE,
            registry=registry,
        )
        self._handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, by gRPC status code.",
            (*labels, "grpc_code"),
            namespace=NAMESPACE,
            registry=registry,
        )
        self._seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time from an RPC's start to its status (a stream's whole life).",
            labels,
            namespace=NAMESPACE,
            registry=registry,
            buckets=RPC_BUCKETS_S,
        )

        # Resolving labels takes a lock and a lookup each time; the children of a
        # (bounded) method, kind and code are kept instead.
        self._children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self._codes: dict[tuple[str, str, grpc.StatusCode], Counter] = {}

    @staticmethod
    def _labels(method: str, kind: str) -> tuple[str, str, str]:
        service, _, name = method.lstrip("/").partition("/")
        return service, name, kind

    def started(self, method: str, kind: str) -> None:
        children = self._children.get((method, kind))
        if children is None:
            labels = self._labels(method, kind)
            children = self._started.labels(*labels), self._seconds.labels(*labels)
            self._children[(method, kind)] = children
        children[0].inc()

    def handled(self, method: str, kind: str, code: grpc.StatusCode, seconds: float) -> None:
        counter = self._codes.get((method, kind, code))
        if counter is None:
            counter = self._handled.labels(*self._labels(method, kind), code.name)
            self._codes[(method, kind, code)] = counter
        counter.inc()
        self._children[(method, kind)][1].observe(seconds)


class CommandMetrics:
    """Outcomes of session commands and how long FreeSWITCH takes to confirm an answer."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._outcomes = Counter(
            "command_outcomes",
            "Session commands finished, by command, final status and failure reason.",
            ("command", "status", "reason"),
            namespace=NAMESPACE,
            registry=registry,
        )
        self._answer = Histogram(
            "answer_confirmation_seconds",
            "Time from accepting an answer command to FreeSWITCH's CHANNEL_EXECUTE_COMPLETE.",
            namespace=NAMESPACE,
            registry=registry,
            buckets=ANSWER_BUCKETS_S,
        )
        self.sessions = Gauge(
            "sessions_live", "Calls under the gateway's control now.", namespace=NAMESPACE, registry=registry
        )
        self.operations = Gauge(
            "operations_retained",
            "Operations kept for reads and idempotency (in progress and finished).",
            namespace=NAMESPACE,
            registry=registry,
        )

    def finished(self, command: str, status: str, reason: str) -> None:
        self._outcomes.labels(command, status, reason or "none").inc()

    def answer_confirmed(self, seconds: float) -> None:
        self._answer.observe(seconds)


class LinkMetrics:
    """The Event Socket link. Thread-safe: the gevent thread records into it."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry or CollectorRegistry()
        self.connections = Gauge(
            "esl_connections",
            "Outbound Event Socket connections open now (one per call).",
            namespace=NAMESPACE,
            registry=registry,
        )
        self._frames = Counter(
            "esl_frames_received",
            "Frames read from FreeSWITCH, by content type.",
            ("content_type",),
            namespace=NAMESPACE,
            registry=registry,
        )
        self._by_kind = {kind: self._frames.labels(kind) for kind in (*_FRAME_KINDS, "other")}
        self.protocol_errors = Counter(
            "esl_protocol_errors",
            "Connections closed because FreeSWITCH sent bytes that are not a valid frame.",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.reply_timeouts = Counter(
            "esl_reply_timeouts",
            "Commands FreeSWITCH did not answer within esl.reply_timeout_ms (the socket is closed).",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.reply_seconds = Histogram(
            "esl_reply_seconds",
            "Time from writing a command to FreeSWITCH's reply.",
            namespace=NAMESPACE,
            registry=registry,
            buckets=ESL_REPLY_BUCKETS_S,
        )

    def frame_received(self, content_type: str | None) -> None:
        kind = content_type if content_type in self._by_kind else "other"
        self._by_kind[kind].inc()

    def count_connections(self, count: Callable[[], int]) -> None:
        self.connections.set_function(count)
