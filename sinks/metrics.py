"""Prometheus metrics of the sinks and the small HTTP server for /metrics, /healthz, /readyz.

Each sink owns a :class:`~prometheus_client.CollectorRegistry` (several sinks can run in one
process, as the tests do). Per-record latency is observed in bulk, once per acknowledged
write, by :class:`BulkHistogram`, so measuring every record stays cheap at 100,000 points/s.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
)  # fmt: skip


class BulkHistogram(Collector):
    """A labelled histogram fed with many observations at once (one label: ``kind``)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: tuple[float, ...] = LATENCY_BUCKETS,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(sorted(buckets))
        self._series: dict[str, tuple[list[int], list[float]]] = {}
        """kind -> (per-bucket counts with +Inf last, [sum])"""
        if registry is not None:
            registry.register(self)

    def observe_many(self, kind: str, values: Iterable[float]) -> None:
        series = self._series.get(kind)
        if series is None:
            series = self._series[kind] = ([0] * (len(self.bounds) + 1), [0.0])
        counts, total = series
        bounds = self.bounds
        subtotal = 0.0
        for v in values:
            counts[bisect_left(bounds, v)] += 1
            subtotal += v
        total[0] += subtotal

    def count(self, kind: str) -> int:
        series = self._series.get(kind)
        return sum(series[0]) if series else 0

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=["kind"])
        for kind, (counts, total) in sorted(self._series.items()):
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, n in zip((*self.bounds, math.inf), counts, strict=True):
                cumulative += n
                buckets.append(("+Inf" if math.isinf(bound) else repr(bound), cumulative))
            family.add_metric([kind], buckets, total[0])
        yield family

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=["kind"])


class InfluxSinkMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        p = "citystream_sink_influx"
        self.records = Counter(f"{p}_records", "Kafka records consumed", ["topic"], registry=registry)
        self.points = Counter(
            f"{p}_points_written", "Points acknowledged by InfluxDB", ["bucket"], registry=registry
        )
        self.write_errors = Counter(f"{p}_write_errors", "Failed write attempts", ["kind"], registry=registry)
        self.dead_letters = Counter(
            f"{p}_dead_letters", "Records sent to the dead-letter topic", ["reason"], registry=registry
        )
        self.skipped = Counter(
            f"{p}_skipped",
            "Records with nothing to write (deleted keys of compacted topics)",
            ["reason"],
            registry=registry,
        )
        self.commits = Counter(f"{p}_commits", "Offset commits after a successful flush", registry=registry)
        self.buffered = Gauge(f"{p}_buffered_points", "Points buffered or being written", registry=registry)
        self.paused = Gauge(
            f"{p}_paused", "1 while the partitions are paused (back pressure)", registry=registry
        )
        self.failing = Gauge(f"{p}_failing", "1 while writes to InfluxDB fail", registry=registry)
        self.write_seconds = Histogram(
            f"{p}_write_seconds",
            "Duration of one successful write request",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )
        self.latency = BulkHistogram(
            f"{p}_latency_seconds",
            "From the record's origin time (device time for readings, emission for aggregates "
            "and alerts) to InfluxDB's acknowledgement of its write",
            registry=registry,
        )


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        p = "citystream_sink_webhook"
        self.events = Counter(
            f"{p}_events", "Alert events consumed, by what happened to them", ["outcome"], registry=registry
        )
        self.attempts = Counter(
            f"{p}_attempts", "Delivery attempts", ["subscriber", "result"], registry=registry
        )
        self.deliveries = Counter(
            f"{p}_deliveries", "Finished deliveries", ["subscriber", "outcome"], registry=registry
        )
        self.pending = Gauge(
            f"{p}_pending_records", "Records with deliveries still running", registry=registry
        )
        self.paused = Gauge(
            f"{p}_paused", "1 while the partitions are paused (back pressure)", registry=registry
        )
        self.latency = BulkHistogram(
            f"{p}_latency_seconds",
            "From the alert event time to the receiver's 2xx answer",
            registry=registry,
        )


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "citystream_alert_api_requests", "API requests", ["route", "status"], registry=registry
        )
        self.commands = Counter(
            "citystream_alert_api_commands",
            "Commands written to alerts.commands",
            ["kind"],
            registry=registry,
        )


Probe = Callable[[], tuple[bool, str]]


def health_routes(registry: CollectorRegistry, live: Probe, ready: Probe) -> list[web.RouteDef]:
    """``/metrics``, ``/healthz`` (the process works) and ``/readyz`` (it can do its job)."""

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def probe(check: Probe) -> Callable[[web.Request], object]:
        async def handler(_: web.Request) -> web.Response:
            ok, detail = check()
            return web.json_response({"ok": ok, "detail": detail}, status=200 if ok else 503)

        return handler

    return [
        web.get("/metrics", metrics),
        web.get("/healthz", probe(live)),  # type: ignore[arg-type]  # aiohttp handler type
        web.get("/readyz", probe(ready)),  # type: ignore[arg-type]  # aiohttp handler type
    ]


class HttpServer:
    """An aiohttp site on ``host:port`` (port 0 picks a free one; see :attr:`port`)."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.requested_port = port
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.requested_port)
        await site.start()
        for address in self._runner.addresses:
            if isinstance(address, tuple):
                self.port = int(address[1])
                break
        logger.info("http: listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def process_registry() -> CollectorRegistry:
    """A registry with the process' CPU and memory (``process_*``, read by the pipeline monitor)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    return registry
