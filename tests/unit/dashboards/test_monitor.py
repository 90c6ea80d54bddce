"""The pipeline monitor's reading of Prometheus metrics, /proc and offsets (no I/O but tmp files)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from sinks import monitor
from sinks.monitor import Rates, Series, parse, quantile

INGEST = Series("ingest", "ingest")


def _registry() -> tuple[CollectorRegistry, Counter, Counter, Gauge, Histogram]:
    r = CollectorRegistry()
    received = Counter("citystream_ingest_received", "", registry=r)
    dead = Counter("citystream_ingest_dead_lettered", "", ["reason"], registry=r)
    Counter("citystream_ingest_device_dead_lettered", "", ["device_id", "reason"], registry=r).labels(
        "aq-1", "malformed"
    ).inc(5)
    in_flight = Gauge("citystream_ingest_in_flight", "", registry=r)
    latency = Histogram(
        "citystream_ingest_produce_latency_seconds", "", buckets=(0.01, 0.02, 0.05, 0.1), registry=r
    )
    Counter("python_gc_objects_collected", "", registry=r).inc(3)
    return r, received, dead, in_flight, latency


def _text(r: CollectorRegistry) -> str:
    return generate_latest(r).decode()


@pytest.mark.parametrize(
    ("instance", "stage"),
    [
        ("ingest", "ingest"),
        ("ingest-2", "ingest"),
        ("sink-influx", "sink_influx"),
        ("sink-webhook-1", "sink_webhook"),
    ],
)
def test_stage_of_an_instance(instance: str, stage: str) -> None:
    assert monitor.stage_of(instance) == stage


def test_parse_follows_the_naming_convention() -> None:
    r, received, dead, in_flight, latency = _registry()
    received.inc(10)
    dead.labels("malformed").inc(2)
    in_flight.set(7)
    latency.observe(0.015)
    scrape = parse(_text(r), "ingest")
    assert scrape.counters == {
        (INGEST, "received_per_s"): 10.0,
        (Series("ingest", "ingest", reason="malformed"), "dead_lettered_per_s"): 2.0,
    }
    assert scrape.gauges == {(INGEST, "in_flight"): 7.0}
    buckets = scrape.histograms[(Series("ingest", "ingest", hop="ingest.produce"), "latency")]
    assert buckets == {0.01: 0.0, 0.02: 1.0, 0.05: 1.0, 0.1: 1.0, float("inf"): 1.0}


def test_hops_of_the_stages_histograms() -> None:
    assert monitor.hop_of("citystream_ingest_device_latency_seconds", "ingest", {}) == "ingest.device"
    assert (
        monitor.hop_of("citystream_sink_influx_latency_seconds", "sink_influx", {"kind": "reading"})
        == "sink_influx.reading"
    )
    assert monitor.hop_of("citystream_sink_influx_write_seconds", "sink_influx", {}) == "sink_influx.write"
    assert (
        monitor.hop_of("citystream_device_to_kafka_latency_seconds", "ingest", {}) == "ingest.device_to_kafka"
    )
    assert monitor.hop_of("citystream_ingest_x_seconds", "ingest", {"hop": "bridge"}) == "bridge"


def test_process_collector_metrics() -> None:
    text = (
        "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 12.5\n"
        "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 1048576\n"
    )
    scrape = parse(text, "sink-influx")
    stage = Series("sink_influx", "sink-influx")
    assert scrape.counters == {(stage, "cpu_cores"): 12.5}
    assert scrape.gauges == {(stage, "rss_bytes"): 1048576.0}


def test_rates_from_successive_scrapes_and_a_restart() -> None:
    r, received, _, _, _ = _registry()
    rates = Rates()
    received.inc(100)
    assert "received_per_s" not in rates.update(parse(_text(r), "ingest"), 1000.0).get(INGEST, {})
    received.inc(50)
    assert rates.update(parse(_text(r), "ingest"), 1010.0)[INGEST]["received_per_s"] == 5.0
    # A restarted process starts its counters at zero: its new value is the increase.
    restarted = "citystream_ingest_received_total 20\n"  # untyped, read as a counter by its name
    assert rates.update(parse(restarted, "ingest"), 1020.0)[INGEST]["received_per_s"] == 2.0


def test_latency_quantiles_come_from_the_interval_only() -> None:
    r, _, _, _, latency = _registry()
    rates = Rates()
    for _ in range(100):
        latency.observe(0.09)  # before the interval: must not count
    rates.update(parse(_text(r), "ingest"), 0.0)
    for _ in range(99):
        latency.observe(0.015)
    latency.observe(0.2)
    fields = rates.update(parse(_text(r), "ingest"), 10.0)[Series("ingest", "ingest", hop="ingest.produce")]
    assert fields["count_per_s"] == 10.0
    assert 10.0 < fields["p50_ms"] <= 20.0
    assert 10.0 < fields["p99_ms"] <= 20.0  # 99 of 100 are in the (10, 20] ms bucket
    nothing = rates.update(parse(_text(r), "ingest"), 20.0)[Series("ingest", "ingest", hop="ingest.produce")]
    assert nothing == {"count_per_s": 0.0}


def test_quantile_interpolates_like_prometheus() -> None:
    buckets = {0.1: 10.0, 0.2: 20.0, float("inf"): 20.0}
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.75, buckets) == pytest.approx(0.15)
    assert quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None
    assert quantile(0.99, {0.1: 0.0, float("inf"): 5.0}) == 0.1  # all above the last bound


def test_read_proc_and_pid_files(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    fields = ["S", *(["0"] * 10), "250", "150", *(["0"] * 8), "300", "0"]  # state .. utime, stime .. rss
    (tmp_path / "42" / "stat").write_text(f"42 (kafka (java)) {' '.join(fields)}\n")
    sample = monitor.read_proc(42, tmp_path)
    assert sample is not None
    assert sample.rss_bytes == 300 * monitor._PAGE_SIZE
    assert sample.cpu_seconds == pytest.approx(400 / monitor._CLK_TCK)
    (tmp_path / "43").mkdir()
    (tmp_path / "43" / "stat").write_text("43 (zombie) Z " + " ".join(["0"] * 30))
    assert monitor.read_proc(43, tmp_path) is None
    assert monitor.read_proc(44, tmp_path) is None
    pid_file = tmp_path / "svc.pid"
    pid_file.write_text("1234\n")
    assert monitor.read_pid(pid_file) == 1234
    pid_file.write_text("garbage")
    assert monitor.read_pid(pid_file) is None
    assert monitor.read_pid(tmp_path / "missing.pid") is None


def test_consumer_lag_counts_messages_behind_the_end() -> None:
    assert monitor.consumer_lag({"p0": 10, "p1": 5}, {"p0": 15, "p1": 5}) == 5
    assert monitor.consumer_lag({"p0": 10}, {"p0": 8}) == 0  # end offsets fetched before the commit


def test_points_carry_the_contract_tags() -> None:
    fields = {
        Series("ingest", "ingest", reason="malformed"): {"dead_lettered_per_s": 0.5},
        Series("ingest", "ingest", hop="ingest.produce"): {"p50_ms": 12.0, "p99_ms": float("nan")},
        Series("kafka", "sink-influx"): {"lag": 3.0},
        Series("mosquitto", "host"): {"cpu_cores": float("inf")},
    }
    lines = sorted(p.to_line_protocol() for p in monitor.to_points(fields, 1_700_000_000_000))
    assert lines == [
        "pipeline,hop=ingest.produce,instance=ingest,stage=ingest p50_ms=12 1700000000000",
        "pipeline,instance=ingest,reason=malformed,stage=ingest dead_lettered_per_s=0.5 1700000000000",
        "pipeline,instance=sink-influx,stage=kafka lag=3 1700000000000",
    ]


def test_a_series_created_between_scrapes_counts_from_zero() -> None:
    r, received, dead, _, _ = _registry()
    rates = Rates()
    received.inc(1)
    rates.update(parse(_text(r), "ingest"), 0.0)
    dead.labels("malformed").inc(4)  # the labelled series exists from its first increment on
    fields = rates.update(parse(_text(r), "ingest"), 2.0)
    assert fields[Series("ingest", "ingest", reason="malformed")] == {"dead_lettered_per_s": 2.0}
    # A target that did not answer may have restarted: its next scrape is a new baseline.
    rates.forget("ingest")
    dead.labels("unknown_device").inc(1)
    assert not any(s.reason for s in rates.update(parse(_text(r), "ingest"), 4.0))
