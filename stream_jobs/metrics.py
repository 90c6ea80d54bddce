"""The stream jobs' counters for Prometheus (``citystream_jobs_*``), with the process' CPU and memory.

:class:`~stream_jobs.runtime.Stats` counts what the agents did; this collector exports every
counter as ``citystream_jobs_<name>_total`` and the dead-letter counters (``dlq_<reason>``) as
``citystream_jobs_dead_lettered_total{reason}``, the naming the pipeline monitor reads
(:mod:`sinks.monitor`). The endpoint is ``http://{jobs.metrics_host}:{jobs.metrics_port}/metrics``
(port 0 turns it off).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from citystream.settings import Settings
from stream_jobs.runtime import Stats

logger = logging.getLogger(__name__)

DLQ_PREFIX = "dlq_"


class JobsCollector(Collector):
    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        counts = dict(self.stats.counts)
        dlq = CounterMetricFamily(
            "citystream_jobs_dead_lettered", "input records written to telemetry.dlq", labels=["reason"]
        )
        for name, value in sorted(counts.items()):
            if name.startswith(DLQ_PREFIX):
                dlq.add_metric([name.removeprefix(DLQ_PREFIX)], value)
            else:
                yield CounterMetricFamily(f"citystream_jobs_{name}", f"stream jobs: {name}", value=value)
        yield dlq


def registry_of(stats: Stats) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobsCollector(stats))
    ProcessCollector(registry=registry)
    return registry


def serve(settings: Settings, stats: Stats) -> None:
    """Serve ``/metrics`` from a background thread (nothing when the port is 0)."""
    j = settings.jobs
    if not j.metrics_port:
        return
    try:
        start_http_server(j.metrics_port, addr=j.metrics_host, registry=registry_of(stats))
    except OSError as exc:  # another worker of this machine has the port: run on without
        logger.warning(
            "no /metrics: cannot listen on %s:%d (%s); set CITYSTREAM_JOBS__METRICS_PORT",
            j.metrics_host,
            j.metrics_port,
            exc.strerror or exc,
        )
        return
    logger.info("metrics on http://%s:%d/metrics", j.metrics_host, j.metrics_port)
