"""Counters, histograms and the HTTP endpoints' responses (no I/O)."""

from __future__ import annotations

import argparse

from prometheus_client import CollectorRegistry, generate_latest

import ingest.reasons
from ingest import reasons
from ingest.cli import register
from ingest.metrics import MAX_DEVICE_SERIES, HttpEndpoints, LatencyHistogram, Stats, StatsCollector


def test_histogram_buckets_and_quantiles() -> None:
    h = LatencyHistogram((10, 100, 1000))
    for ms in (1, 5, 50, 500, 5000, -3):
        h.observe(ms)
    assert h.counts == [3, 1, 1, 1]
    assert h.count == 6
    assert h.quantile(0.5) == 10
    assert h.quantile(0.99) == float("inf")
    family = h.family("x_seconds", "doc")
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert samples[("x_seconds_bucket", "0.01")] == 3
    assert samples[("x_seconds_bucket", "1.0")] == 5
    assert samples[("x_seconds_bucket", "+Inf")] == 6
    assert samples[("x_seconds_sum", None)] == 5.556


def test_exported_metrics() -> None:
    stats = Stats()
    stats.received = 7
    stats.produced = [5, 1, 1]
    stats.dead_letter(reasons.NOT_FINITE, "aq-1")
    stats.produce_latency.observe(3)
    registry = CollectorRegistry()
    registry.register(StatsCollector(stats, lambda: {"in_flight": 2.0}))
    text = generate_latest(registry).decode()
    assert "citystream_ingest_received_total 7.0" in text
    assert 'citystream_ingest_produced_total{output="dlq"} 1.0' in text
    assert 'citystream_ingest_dead_lettered_total{reason="not_finite"} 1.0' in text
    assert 'citystream_ingest_device_dead_lettered_total{device_id="aq-1",reason="not_finite"} 1.0' in text
    assert 'citystream_ingest_produce_latency_seconds_bucket{le="0.005"} 1.0' in text
    assert "citystream_ingest_in_flight 2.0" in text


def test_per_device_series_are_bounded() -> None:
    stats = Stats()
    for i in range(MAX_DEVICE_SERIES + 5):
        stats.dead_letter(reasons.SCHEMA, f"dev-{i}")
    assert len(stats.dead_lettered_by_device) == MAX_DEVICE_SERIES + 1
    assert stats.dead_lettered_by_device[("_other", reasons.SCHEMA)] == 5
    assert stats.dead_lettered[reasons.SCHEMA] == MAX_DEVICE_SERIES + 5


def test_endpoint_responses() -> None:
    ready = [False]
    http = HttpEndpoints(CollectorRegistry(), lambda: (ready[0], {"mqtt": ready[0]}))
    assert http._respond(b"/healthz")[0] == "200 OK"
    assert http._respond(b"/readyz") == ("503 Service Unavailable", "application/json", b'{"mqtt":false}\n')
    ready[0] = True
    assert http._respond(b"/readyz")[0] == "200 OK"
    assert http._respond(b"/metrics")[0] == "200 OK"
    assert http._respond(b"/nope")[0] == "404 Not Found"


def test_every_reason_is_documented() -> None:
    doc = ingest.reasons.__doc__ or ""
    for code in reasons.ALL:
        assert f"``{code}``" in doc, code
    assert len(set(reasons.ALL)) == len(reasons.ALL)


def test_cli_commands() -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["devices", "add", "aq-1-x", "--district", "mapo", "--sensor-type", "noise"])
    assert (args.device_id, args.district, args.sensor_type, args.password) == (
        "aq-1-x",
        "mapo",
        "noise",
        None,
    )
    for argv in (
        ["devices", "list"],
        ["devices", "revoke", "x"],
        ["devices", "rotate", "x"],
        ["devices", "sync"],
    ):
        assert callable(parser.parse_args(argv).func)
    args = parser.parse_args(["ingest", "--instance", "b", "--metrics-port", "0"])
    assert (args.instance, args.metrics_port) == ("b", 0)
