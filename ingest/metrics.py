"""The bridge's counters and histograms, exported for Prometheus, and its HTTP endpoints.

The hot path only increments plain integers and fixed-bucket histograms (:class:`Stats`); a
collector turns them into Prometheus metric families when ``/metrics`` is scraped. ``/healthz``
answers while the process and its event loop are alive; ``/readyz`` answers 200 only while the
MQTT session is subscribed and the Kafka producer is ready (503 otherwise, with the reason).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from citystream import codec

logger = logging.getLogger(__name__)

LATENCY_BUCKETS_MS: tuple[float, ...] = (
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 300_000,
)  # fmt: skip
MAX_DEVICE_SERIES = 10_000
"""Per-device dead-letter counters kept; beyond this, rejections count under device ``_other``."""
OUTPUTS = ("raw", "dlq", "status")


class LatencyHistogram:
    """A fixed-bucket histogram of milliseconds (cheap enough to observe every message)."""

    __slots__ = ("bounds", "count", "counts", "total_ms")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS_MS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.total_ms = 0.0

    def observe(self, ms: float) -> None:
        ms = max(float(ms), 0.0)
        self.counts[bisect_left(self.bounds, ms)] += 1
        self.count += 1
        self.total_ms += ms

    def quantile(self, q: float) -> float:
        """An upper bound of the ``q`` quantile (the bucket's bound), in milliseconds."""
        if not self.count:
            return 0.0
        target = q * self.count
        seen = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            seen += count
            if seen >= target:
                return bound
        return float("inf")

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        buckets: list[tuple[str, float]] = []
        cumulative = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            cumulative += count
            buckets.append((repr(bound / 1000), cumulative))
        buckets.append(("+Inf", self.count))
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self.total_ms / 1000)


class Stats:
    """What the bridge counts; plain attributes, read by :class:`StatsCollector`."""

    def __init__(self) -> None:
        self.received = 0
        self.redelivered = 0
        """Messages the broker sent again (MQTT DUP flag: a previous session did not ack them)."""
        self.duplicates = 0
        """Readings whose seq is not above the last seq this process saw from the device."""
        self.produced = [0, 0, 0]
        """Records Kafka acknowledged, per output (see ``OUTPUTS``)."""
        self.dead_lettered: dict[str, int] = {}
        self.dead_lettered_by_device: dict[tuple[str, str], int] = {}
        self.internal_errors = 0
        self.produce_latency = LatencyHistogram()
        """Bridge receive to Kafka acknowledgement."""
        self.device_latency = LatencyHistogram()
        """Device timestamp to Kafka acknowledgement (includes the device's clock error)."""

    def dead_letter(self, reason: str, device_id: str | None) -> None:
        self.dead_lettered[reason] = self.dead_lettered.get(reason, 0) + 1
        by_device = self.dead_lettered_by_device
        key = (device_id or "_none", reason)
        if key not in by_device and len(by_device) >= MAX_DEVICE_SERIES:
            key = ("_other", reason)
        by_device[key] = by_device.get(key, 0) + 1

    def snapshot(self) -> dict[str, object]:
        """A JSON-friendly summary (logged at shutdown, used by the benchmark)."""
        return {
            "received": self.received,
            "redelivered": self.redelivered,
            "duplicates": self.duplicates,
            "produced": dict(zip(OUTPUTS, self.produced, strict=True)),
            "dead_lettered": dict(sorted(self.dead_lettered.items())),
            "internal_errors": self.internal_errors,
            "produce_latency_ms": {
                "count": self.produce_latency.count,
                "p50_le": self.produce_latency.quantile(0.5),
                "p99_le": self.produce_latency.quantile(0.99),
            },
        }


class StatsCollector(Collector):
    """Exports :class:`Stats` and the live gauges as ``citystream_ingest_*`` metrics."""

    def __init__(self, stats: Stats, gauges: Callable[[], dict[str, float]]) -> None:
        self.stats = stats
        self.gauges = gauges

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        s = self.stats
        yield CounterMetricFamily("citystream_ingest_received", "MQTT messages received", value=s.received)
        yield CounterMetricFamily(
            "citystream_ingest_redelivered", "MQTT messages received again (DUP flag)", value=s.redelivered
        )
        yield CounterMetricFamily(
            "citystream_ingest_duplicates", "readings whose seq did not increase", value=s.duplicates
        )
        produced = CounterMetricFamily(
            "citystream_ingest_produced", "records Kafka acknowledged", labels=["output"]
        )
        for output, value in zip(OUTPUTS, s.produced, strict=True):
            produced.add_metric([output], value)
        yield produced
        dlq = CounterMetricFamily(
            "citystream_ingest_dead_lettered", "messages written to telemetry.dlq", labels=["reason"]
        )
        for reason, value in sorted(s.dead_lettered.items()):
            dlq.add_metric([reason], value)
        yield dlq
        by_device = CounterMetricFamily(
            "citystream_ingest_device_dead_lettered",
            "messages written to telemetry.dlq per device",
            labels=["device_id", "reason"],
        )
        for (device_id, reason), value in sorted(s.dead_lettered_by_device.items()):
            by_device.add_metric([device_id, reason], value)
        yield by_device
        yield CounterMetricFamily(
            "citystream_ingest_internal_errors", "messages the bridge failed on", value=s.internal_errors
        )
        yield s.produce_latency.family(
            "citystream_ingest_produce_latency_seconds", "bridge receive to Kafka acknowledgement"
        )
        yield s.device_latency.family(
            "citystream_ingest_device_latency_seconds", "device timestamp to Kafka acknowledgement"
        )
        for name, gauge in self.gauges().items():
            yield GaugeMetricFamily(f"citystream_ingest_{name}", name.replace("_", " "), value=gauge)


class HttpEndpoints:
    """``/metrics``, ``/healthz`` and ``/readyz`` on a small asyncio HTTP/1.0 server."""

    def __init__(
        self, registry: CollectorRegistry, readiness: Callable[[], tuple[bool, dict[str, object]]]
    ) -> None:
        self.registry = registry
        self.readiness = readiness
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._handle, host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info("metrics on http://%s:%d/metrics", host, self.port)
        return self.port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readline()
                while (await reader.readline()).strip():
                    pass  # headers are not needed
            parts = request.split()
            path = parts[1].split(b"?")[0] if len(parts) >= 2 else b""
            status, content_type, body = self._respond(path)
            head = (
                f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError) as exc:
            logger.debug("metrics request failed: %r", exc)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _respond(self, path: bytes) -> tuple[str, str, bytes]:
        if path == b"/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path == b"/healthz":
            return "200 OK", "text/plain; charset=utf-8", b"ok\n"
        if path == b"/readyz":
            ready, detail = self.readiness()
            status = "200 OK" if ready else "503 Service Unavailable"
            return status, "application/json", codec.encode(detail) + b"\n"
        return "404 Not Found", "text/plain; charset=utf-8", b"not found\n"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
