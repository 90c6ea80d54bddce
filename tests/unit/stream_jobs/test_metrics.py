"""The jobs' /metrics follows the pipeline monitor's naming: counters, dead letters by reason, process."""

from __future__ import annotations

from prometheus_client import generate_latest

from sinks import monitor
from stream_jobs.metrics import registry_of
from stream_jobs.runtime import Stats


def test_the_monitor_reads_the_jobs_counters_dead_letters_and_process() -> None:
    stats = Stats()
    stats.add("readings", 1200)
    stats.add("aggregates", 7)
    stats.add("dlq_invalid_reading", 3)
    stats.add("dlq_late", 2)
    text = generate_latest(registry_of(stats)).decode()

    scrape = monitor.parse(text, "jobs")

    counters = {(key[0].reason, key[1]): value for key, value in scrape.counters.items()}
    assert counters[(None, "readings_per_s")] == 1200
    assert counters[(None, "aggregates_per_s")] == 7
    assert counters[("invalid_reading", "dead_lettered_per_s")] == 3
    assert counters[("late", "dead_lettered_per_s")] == 2
    assert counters[(None, "cpu_cores")] > 0
    assert {key[1] for key in scrape.gauges} >= {"rss_bytes"}
    assert all(key[0].stage == "jobs" for key in scrape.counters)
