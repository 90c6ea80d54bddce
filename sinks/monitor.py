"""The pipeline monitor: samples the pipeline's health and writes ``pipeline`` points to InfluxDB.

Every ``monitor.interval_s`` seconds (``citystream monitor``, or ``python -m sinks.monitor``):

- it scrapes the Prometheus ``/metrics`` endpoint of each pipeline process
  (``monitor.targets``: instance name -> URL; when empty, the ingest bridge and the two sinks
  on 127.0.0.1 with their configured metrics ports);
- it reads ``/proc`` for each local service whose pid file is under ``stack.state_dir``
  (``monitor.services``: name -> pid file; a service without a pid file does not run on this
  machine and is skipped; a pid file whose process is gone reports ``up=0``);
- it asks Kafka for each consumer group's committed offsets and the partitions' end offsets
  (``monitor.consumer_groups``; empty means every group);

and writes ``pipeline`` points to the aggregate bucket (``influx.bucket_agg``) with
``monitor.write_token`` (empty: ``influx.sink_token``). A failed write keeps the points for the
next cycle (at most ``monitor.max_buffered_points``; older ones are dropped and counted).

Metric naming convention (what the stages expose)
-------------------------------------------------
A target's *stage* is its instance name without a replica number, ``-`` read as ``_``
(``ingest`` and ``ingest-2`` -> ``ingest``; ``sink-influx`` -> ``sink_influx``). Metric names are
read like this (the ``<stage>_`` part may be left out):

- counter ``citystream_<stage>_<what>_total`` -> field ``<what>_per_s``, its rate over the
  interval (a counter that went down restarted: its new value is the increase);
- gauge ``citystream_<stage>_<what>`` -> field ``<what>`` (the value);
- histogram ``citystream_<stage>_<name>_latency_seconds`` (or ``..._<name>_seconds``) -> tag
  ``hop`` = ``<stage>.<name>``, plus ``_<kind>`` when the sample has a ``kind`` label (a ``hop``
  label is taken as it is); fields ``p50_ms`` and ``p99_ms`` (from the bucket increases over
  the interval, interpolated inside a bucket like Prometheus' ``histogram_quantile``; left out
  when nothing was observed) and ``count_per_s``;
- a ``reason`` label becomes the ``reason`` tag (dead letters by reason); samples with a
  ``device_id`` label are per-device detail and are skipped; every other label is added up;
- ``process_cpu_seconds_total`` and ``process_resident_memory_bytes`` (prometheus_client's
  process collector) -> ``cpu_cores`` and ``rss_bytes``; other metrics are ignored.

For example the bridge's (target ``ingest``) ``citystream_ingest_received_total``,
``citystream_ingest_produced_total{output}``, ``citystream_ingest_dead_lettered_total{reason}``,
``citystream_ingest_in_flight`` and ``citystream_ingest_produce_latency_seconds`` become
``received_per_s``, ``produced_per_s``, ``dead_lettered_per_s`` (tag ``reason``), ``in_flight``
and hop ``ingest.produce``; the InfluxDB sink's (target ``sink-influx``)
``citystream_sink_influx_points_written_total{bucket}`` and
``citystream_sink_influx_latency_seconds{kind="reading"}`` become ``points_written_per_s`` and
hop ``sink_influx.reading``.

Points (measurement ``pipeline``, millisecond sample time)
----------------------------------------------------------
========================  ==================================  =====================================
tags                      fields                              from
========================  ==================================  =====================================
stage, instance           ``<what>_per_s``, ``<what>``        counters and gauges of a target
stage, instance, reason   ``<what>_per_s``                    counters with a ``reason`` label
stage, instance, hop      ``p50_ms``, ``p99_ms``,             latency histograms
                          ``count_per_s``
stage, instance           ``cpu_cores``, ``rss_bytes``        process collector, or ``/proc`` for
                                                              services (stage = service name,
                                                              instance = host name)
stage, instance           ``up`` (1 answered, 0 did not)      every target and service
stage=kafka,              ``lag`` (messages behind the end    consumer groups
instance=<group id>       of the log, over all partitions)
stage=monitor, instance   ``scrape_errors``,                  the monitor itself (totals since
                          ``write_errors``, ``dropped_points``  it started)
========================  ==================================  =====================================

``cpu_cores`` is CPU seconds per second (1.0 = one core busy).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from prometheus_client.parser import text_string_to_metric_families

from citystream.errors import CitystreamError
from citystream.settings import Settings

if TYPE_CHECKING:
    from influxdb_client.client.write.point import Point

logger = logging.getLogger(__name__)

MEASUREMENT = "pipeline"
PREFIX = "citystream_"
QUANTILES = (("p50_ms", 0.5), ("p99_ms", 0.99))
PROCESS_METRICS = frozenset({"process_cpu_seconds", "process_resident_memory_bytes"})
PER_DEVICE_LABEL = "device_id"
"""Samples with this label are per-device detail, not pipeline health: they are skipped."""
KAFKA_STAGE = "kafka"
MONITOR_STAGE = "monitor"
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class Series(NamedTuple):
    """The tags of one ``pipeline`` point."""

    stage: str
    instance: str
    hop: str | None = None
    reason: str | None = None


Key = tuple[Series, str]
"""A series and the name of one of its quantities."""
Buckets = dict[float, float]
"""Histogram bucket upper bound -> cumulative count."""


@dataclass
class Scrape:
    """What one ``/metrics`` answer says, summed per series (labels other than hop/reason added up)."""

    instance: str = ""
    counters: dict[Key, float] = field(default_factory=lambda: defaultdict(float))
    gauges: dict[Key, float] = field(default_factory=lambda: defaultdict(float))
    histograms: dict[Key, Buckets] = field(default_factory=dict)


def stage_of(instance: str) -> str:
    """A target's stage: its instance name without a replica number, ``-`` read as ``_``."""
    base, _, suffix = instance.rpartition("-")
    name = base if base and suffix.isdigit() else instance
    return name.replace("-", "_")


def _strip(name: str, stage: str) -> str:
    """``citystream_<stage>_x`` -> ``x`` (the stage part is optional)."""
    rest = name.removeprefix(PREFIX)
    return rest.removeprefix(f"{stage}_")


def _series(stage: str, instance: str, labels: Mapping[str, str]) -> Series:
    return Series(stage, instance, labels.get("hop"), labels.get("reason"))


def parse(text: str, instance: str) -> Scrape:
    """Read a Prometheus text exposition by the naming convention of this module.

    Raises ``ValueError`` when the text is not an exposition.
    """
    stage = stage_of(instance)
    scrape = Scrape(instance)
    for family in text_string_to_metric_families(text):
        name = family.name
        samples = [s for s in family.samples if PER_DEVICE_LABEL not in s.labels]
        if name in PROCESS_METRICS:
            _process(scrape, samples, Series(stage, instance))
        elif not name.startswith(PREFIX) or name.endswith("_created"):
            continue
        elif family.type == "histogram":
            _histogram(scrape, samples, name, stage, instance)
        elif family.type == "counter" or (family.type == "unknown" and name.endswith("_total")):
            what = _strip(name.removesuffix("_total"), stage)
            for s in samples:
                if s.name.endswith("_total"):
                    scrape.counters[(_series(stage, instance, s.labels), f"{what}_per_s")] += s.value
        elif family.type in ("gauge", "unknown"):
            what = _strip(name, stage)
            for s in samples:
                scrape.gauges[(_series(stage, instance, s.labels), what)] += s.value
    return scrape


def _process(scrape: Scrape, samples: Iterable[Any], series: Series) -> None:
    for s in samples:
        if s.name == "process_cpu_seconds_total":
            scrape.counters[(series, "cpu_cores")] += s.value
        elif s.name == "process_resident_memory_bytes":
            scrape.gauges[(series, "rss_bytes")] += s.value


def hop_of(name: str, stage: str, labels: Mapping[str, str]) -> str:
    """The hop a ``*_seconds`` histogram sample measures (see the module docstring)."""
    if labels.get("hop"):
        return labels["hop"]
    base = _strip(name, stage).removesuffix("_seconds").removesuffix("latency").removesuffix("_")
    parts = [p for p in (base, labels.get("kind", "")) if p]
    return f"{stage}.{'_'.join(parts)}" if parts else stage


def _histogram(scrape: Scrape, samples: Iterable[Any], name: str, stage: str, instance: str) -> None:
    if not name.endswith("_seconds"):
        return
    for s in samples:
        if not s.name.endswith("_bucket") or "le" not in s.labels:
            continue
        series = Series(stage, instance, hop_of(name, stage, s.labels), s.labels.get("reason"))
        buckets = scrape.histograms.setdefault((series, "latency"), {})
        bound = float(s.labels["le"])
        buckets[bound] = buckets.get(bound, 0.0) + s.value


def quantile(q: float, buckets: Buckets) -> float | None:
    """The ``q`` quantile of cumulative bucket counts (Prometheus' ``histogram_quantile``)."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def _increase(new: float, old: float) -> float:
    """Counter increase; a counter that went down was restarted, so all of it is new."""
    return new - old if new >= old else new


class Rates:
    """Turns successive scrapes of targets into per-second rates and interval quantiles.

    Rates need a previous scrape of the target: none come from its first one. A series that
    appears in a later scrape was created since the previous one (prometheus_client creates a
    labelled series at its first increment), so it counts from zero then.
    """

    def __init__(self) -> None:
        self._counters: dict[Key, tuple[float, float]] = {}
        self._histograms: dict[Key, tuple[Buckets, float]] = {}
        self._scraped: dict[str, float] = {}
        """Instance -> time of its previous scrape."""

    def update(self, scrape: Scrape, now: float) -> dict[Series, dict[str, float]]:
        """Fields per series from this scrape of ``scrape.instance``."""
        fields: dict[Series, dict[str, float]] = defaultdict(dict)
        before = self._scraped.get(scrape.instance)
        self._scraped[scrape.instance] = now
        for (series, name), value in scrape.gauges.items():
            fields[series][name] = value
        for key, value in scrape.counters.items():
            previous = self._counters.get(key) or (None if before is None else (0.0, before))
            self._counters[key] = (value, now)
            if previous is not None and now > previous[1]:
                fields[key[0]][key[1]] = _increase(value, previous[0]) / (now - previous[1])
        for key, buckets in scrape.histograms.items():
            previous_h = self._histograms.get(key) or (
                None if before is None else (dict.fromkeys(buckets, 0.0), before)
            )
            self._histograms[key] = (dict(buckets), now)
            if previous_h is None or now <= previous_h[1]:
                continue
            old, then = previous_h
            if set(old) != set(buckets) or any(buckets[b] < old[b] for b in buckets):
                delta = dict(buckets)
            else:
                delta = {b: buckets[b] - old[b] for b in buckets}
            series = key[0]
            total = max(delta.values(), default=0.0)
            fields[series]["count_per_s"] = total / (now - then)
            for name, q in QUANTILES:
                value_s = quantile(q, delta)
                if value_s is not None:
                    fields[series][name] = value_s * 1000.0
        return fields

    def forget(self, instance: str) -> None:
        """Drop the state of a target that did not answer (its next scrape starts afresh)."""
        self._counters = {k: v for k, v in self._counters.items() if k[0].instance != instance}
        self._histograms = {k: v for k, v in self._histograms.items() if k[0].instance != instance}
        self._scraped.pop(instance, None)


# -- /proc ----------------------------------------------------------------------------------------


class ProcSample(NamedTuple):
    cpu_seconds: float
    rss_bytes: int


def read_proc(pid: int, proc: Path = Path("/proc")) -> ProcSample | None:
    """CPU time and resident memory of a live process, ``None`` if it is gone (or a zombie)."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    rest = stat.rsplit(")", 1)[-1].split()
    if len(rest) < 22 or rest[0] in ("Z", "X"):
        return None
    utime, stime, rss_pages = int(rest[11]), int(rest[12]), int(rest[21])
    return ProcSample((utime + stime) / _CLK_TCK, rss_pages * _PAGE_SIZE)


def read_pid(path: Path) -> int | None:
    """The pid in a pid file, ``None`` if the file is missing or not a pid."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


# -- the monitor -----------------------------------------------------------------------------------


def default_targets(settings: Settings) -> dict[str, str]:
    """The local pipeline processes' ``/metrics`` (used when ``monitor.targets`` is empty)."""
    host = "127.0.0.1"
    targets = {
        "ingest": f"http://{host}:{settings.ingest.metrics_port}/metrics",
        "sink-influx": f"http://{host}:{settings.sink.influx_metrics_port}/metrics",
        "sink-webhook": f"http://{host}:{settings.sink.webhook_metrics_port}/metrics",
    }
    if settings.jobs.metrics_port:
        targets["jobs"] = f"http://{host}:{settings.jobs.metrics_port}/metrics"
    return targets


class MonitorError(CitystreamError):
    """The monitor cannot start (bad settings)."""


class Monitor:
    """Samples targets, services and consumer lag; writes ``pipeline`` points."""

    def __init__(self, settings: Settings) -> None:
        m = settings.monitor
        if m.interval_s <= 0:
            raise MonitorError("monitor.interval_s must be positive")
        self.settings = settings
        self.targets = dict(m.targets) or default_targets(settings)
        self.host = socket.gethostname()
        self.rates = Rates()
        self._cpu: dict[str, tuple[float, float]] = {}
        self._pending: list[Point] = []
        self._down: set[str] = set()
        """Targets that did not answer their last scrape (logged once until they are back)."""
        self.scrape_errors = 0
        self.write_errors = 0
        self.dropped_points = 0
        self._http: Any = None
        self._admin: Any = None
        self._consumer: Any = None
        self._influx: Any = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        import aiohttp
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient
        from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

        from citystream.kafka_client import Principal, client_kwargs

        i = self.settings.influx
        token = self.settings.monitor.write_token.get_secret_value() or i.sink_token.get_secret_value()
        timeout = aiohttp.ClientTimeout(total=self.settings.monitor.scrape_timeout_s)
        self._http = aiohttp.ClientSession(timeout=timeout)
        self._influx = InfluxDBClientAsync(url=i.url, token=token, org=i.org)
        kafka = client_kwargs(self.settings, Principal.MONITOR)
        bootstrap = kafka["bootstrap_servers"]
        self._admin = AIOKafkaAdminClient(**kafka)
        self._consumer = AIOKafkaConsumer(**kafka, enable_auto_commit=False)
        try:
            await self._admin.start()
            await self._consumer.start()
        except Exception as exc:  # Kafka down: lag is left out, the rest works
            logger.warning("monitor: Kafka at %s is not reachable (%s); no consumer lag", bootstrap, exc)
            await self._close_kafka()

    async def stop(self) -> None:
        await self._close_kafka()
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._influx is not None:
            await self._influx.close()
            self._influx = None

    async def _close_kafka(self) -> None:
        for client, close in ((self._consumer, "stop"), (self._admin, "close")):
            if client is not None:
                with contextlib.suppress(Exception):
                    await getattr(client, close)()
        self._admin = self._consumer = None

    async def __aenter__(self) -> Monitor:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def run(self, stop: asyncio.Event | None = None, *, cycles: int | None = None) -> None:
        """Sample and write every interval until ``stop`` is set (or ``cycles`` are done)."""
        stop = stop or asyncio.Event()
        done = 0
        while not stop.is_set() and (cycles is None or done < cycles):
            started = time.monotonic()
            await self.cycle()
            done += 1
            if cycles is not None and done >= cycles:
                break
            delay = max(0.0, self.settings.monitor.interval_s - (time.monotonic() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def cycle(self) -> list[Point]:
        """One sample of everything, written (or kept for the next cycle when the write fails)."""
        points = await self.sample()
        await self.write(points)
        return points

    # -- sampling ----------------------------------------------------------------------------

    async def sample(self) -> list[Point]:
        now = time.time()
        fields: dict[Series, dict[str, float]] = defaultdict(dict)
        scrapes = await asyncio.gather(*(self._scrape(n, u) for n, u in self.targets.items()))
        for instance, text in zip(self.targets, scrapes, strict=True):
            stage = stage_of(instance)
            fields[Series(stage, instance)]["up"] = 0.0 if text is None else 1.0
            if text is None:
                self.rates.forget(instance)
                continue
            try:
                scrape = parse(text, instance)
            except ValueError as exc:
                self.scrape_errors += 1
                logger.warning("monitor: %s answered something that is not metrics: %s", instance, exc)
                fields[Series(stage, instance)]["up"] = 0.0
                continue
            for series, values in self.rates.update(scrape, now).items():
                fields[series].update(values)
        for series, values in self._services(now).items():
            fields[series].update(values)
        for series, values in (await self._lag()).items():
            fields[series].update(values)
        fields[Series(MONITOR_STAGE, self.host)].update(
            scrape_errors=float(self.scrape_errors),
            write_errors=float(self.write_errors),
            dropped_points=float(self.dropped_points),
        )
        return to_points(fields, int(now * 1000))

    async def _scrape(self, instance: str, url: str) -> str | None:
        """The target's exposition, or ``None`` (counted, and logged when it goes down)."""
        import aiohttp

        try:
            async with self._http.get(url) as resp:
                if resp.status != 200:
                    self._failed(instance, url, f"HTTP {resp.status}")
                    return None
                text: str = await resp.text()
        except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError) as exc:
            self._failed(instance, url, str(exc) or type(exc).__name__)
            return None
        if instance in self._down:
            self._down.discard(instance)
            logger.info("monitor: %s (%s) answers again", instance, url)
        return text

    def _failed(self, instance: str, url: str, why: str) -> None:
        self.scrape_errors += 1
        if instance not in self._down:
            self._down.add(instance)
            logger.warning("monitor: %s (%s) does not answer: %s", instance, url, why)

    def _services(self, now: float) -> dict[Series, dict[str, float]]:
        out: dict[Series, dict[str, float]] = {}
        state_dir = self.settings.stack.state_dir
        for name, pid_file in self.settings.monitor.services.items():
            path = state_dir / pid_file
            if not path.exists():
                continue
            series = Series(name, self.host)
            pid = read_pid(path)
            sample = read_proc(pid) if pid is not None else None
            if sample is None:
                out[series] = {"up": 0.0}
                self._cpu.pop(name, None)
                continue
            values = {"up": 1.0, "rss_bytes": float(sample.rss_bytes)}
            previous = self._cpu.get(name)
            self._cpu[name] = (sample.cpu_seconds, now)
            if previous is not None and now > previous[1]:
                values["cpu_cores"] = _increase(sample.cpu_seconds, previous[0]) / (now - previous[1])
            out[series] = values
        return out

    async def _lag(self) -> dict[Series, dict[str, float]]:
        if self._admin is None or self._consumer is None:
            return {}
        groups = list(self.settings.monitor.consumer_groups)
        if not groups:
            try:
                listed = await self._admin.list_consumer_groups()
            except Exception as exc:  # a Kafka hiccup costs one lag sample, not the monitor
                self.scrape_errors += 1
                logger.warning("monitor: cannot list consumer groups: %s", exc)
                return {}
            # Consumer groups (Faust's too) and manual-assignment committers; not connect or share.
            groups = sorted({str(g[0]) for g in listed if len(g) < 2 or g[1] in ("consumer", "")})
        out: dict[Series, dict[str, float]] = {}
        for group in groups:
            try:
                offsets = await self._admin.list_consumer_group_offsets(group)
                committed = {tp: om.offset for tp, om in offsets.items() if om.offset >= 0}
                if committed:
                    ends = await self._consumer.end_offsets(list(committed))
                    out[Series(KAFKA_STAGE, group)] = {"lag": float(consumer_lag(committed, ends))}
            except Exception as exc:  # one group's trouble does not cost the others' lag
                self.scrape_errors += 1
                logger.warning("monitor: no consumer lag for group %s: %s", group, exc)
        return out

    # -- writing -----------------------------------------------------------------------------

    async def write(self, points: list[Point]) -> None:
        from influxdb_client.domain.write_precision import WritePrecision

        self._pending.extend(points)
        overflow = len(self._pending) - self.settings.monitor.max_buffered_points
        if overflow > 0:
            del self._pending[:overflow]
            self.dropped_points += overflow
            logger.warning("monitor: dropped %d points the database did not take in time", overflow)
        if not self._pending or self._influx is None:
            return
        try:
            await self._influx.write_api().write(
                bucket=self.settings.influx.bucket_agg,
                record=self._pending,
                write_precision=WritePrecision.MS,
            )
        except Exception as exc:  # keep the points and try again next cycle
            self.write_errors += 1
            status, body = getattr(exc, "status", None), getattr(exc, "body", None)
            why = f"HTTP {status}: {body!r}" if status else repr(exc)
            logger.warning(
                "monitor: writing %d points failed (%s); kept for the next cycle", len(self._pending), why
            )
            return
        self._pending = []


def consumer_lag(committed: Mapping[Any, int], ends: Mapping[Any, int]) -> int:
    """Messages between the committed offsets and the end of each partition."""
    return sum(max(0, ends.get(tp, offset) - offset) for tp, offset in committed.items())


def to_points(fields: Mapping[Series, Mapping[str, float]], time_ms: int) -> list[Point]:
    """``pipeline`` points, one per series that has a (finite) field."""
    from influxdb_client.client.write.point import Point

    points = []
    for series, values in sorted(fields.items(), key=lambda kv: tuple(x or "" for x in kv[0])):
        finite = {k: v for k, v in values.items() if math.isfinite(v)}
        if not finite:
            continue
        point = Point(MEASUREMENT).tag("stage", series.stage).tag("instance", series.instance)
        if series.hop:
            point.tag("hop", series.hop)
        if series.reason:
            point.tag("reason", series.reason)
        for name, value in sorted(finite.items()):
            point.field(name, float(value))
        points.append(point.time(time_ms, "ms"))
    return points


# -- command line ----------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    from citystream.settings import get_settings

    settings = get_settings()
    if args.interval is not None:
        settings = settings.model_copy(
            update={"monitor": settings.monitor.model_copy(update={"interval_s": args.interval})}
        )
    asyncio.run(_main(settings, args.cycles))
    return 0


async def _main(settings: Settings, cycles: int | None) -> None:
    monitor = Monitor(settings)
    logger.info(
        "monitor: every %.0f s: targets %s, services %s, writing to %s",
        settings.monitor.interval_s,
        ", ".join(f"{n}={u}" for n, u in monitor.targets.items()),
        ", ".join(settings.monitor.services) or "none",
        settings.influx.bucket_agg,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with monitor:
        await monitor.run(stop, cycles=cycles)
    logger.info("monitor: stopped")


def register(sub: Any) -> None:
    """``citystream monitor`` (for ``<stage>/cli.py`` to call)."""
    parser = sub.add_parser("monitor", help="sample the pipeline's health into InfluxDB (pipeline points)")
    parser.add_argument("--interval", type=float, default=None, help="seconds between samples")
    parser.add_argument("--cycles", type=int, default=None, help="stop after this many samples")
    parser.set_defaults(func=_run)


if __name__ == "__main__":
    import sys

    from citystream.logs import configure_logging
    from citystream.settings import get_settings

    top = argparse.ArgumentParser(prog="python -m sinks.monitor")
    commands = top.add_subparsers(dest="command", required=True)
    register(commands)
    configure_logging(get_settings().log_level)
    namespace = top.parse_args(["monitor", *sys.argv[1:]])
    sys.exit(namespace.func(namespace))
