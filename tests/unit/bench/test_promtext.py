"""Parsing a Prometheus scrape: counters with labels and histogram buckets."""

from __future__ import annotations

import math

from bench.promtext import buckets, parse, total

SCRAPE = """# HELP citystream_ingest_received_total MQTT messages received
# TYPE citystream_ingest_received_total counter
citystream_ingest_received_total 1234.0
citystream_ingest_produced_total{output="raw"} 1200.0
citystream_ingest_produced_total{output="dlq"} 30.0
citystream_sink_influx_latency_seconds_bucket{kind="reading",le="0.005"} 10.0
citystream_sink_influx_latency_seconds_bucket{kind="reading",le="0.5"} 90.0
citystream_sink_influx_latency_seconds_bucket{kind="reading",le="+Inf"} 100.0
citystream_sink_influx_latency_seconds_bucket{kind="alert",le="+Inf"} 7.0
citystream_sink_influx_latency_seconds_count{kind="reading"} 100.0
broken line without value
odd{label="with \\"quote\\""} 2.5 1700000000000
"""


def test_parse_skips_comments_and_broken_lines() -> None:
    samples = parse(SCRAPE)
    names = {s.name for s in samples}
    assert "broken" not in names
    odd = next(s for s in samples if s.name == "odd")
    assert odd.value == 2.5
    assert odd.labels == {"label": 'with \\"quote\\"'}


def test_total_filters_by_labels() -> None:
    samples = parse(SCRAPE)
    assert total(samples, "citystream_ingest_received_total") == 1234.0
    assert total(samples, "citystream_ingest_produced_total") == 1230.0
    assert total(samples, "citystream_ingest_produced_total", output="raw") == 1200.0
    assert total(samples, "missing") == 0.0


def test_buckets_of_one_kind() -> None:
    got = buckets(parse(SCRAPE), "citystream_sink_influx_latency_seconds", kind="reading")
    assert got == {0.005: 10.0, 0.5: 90.0, math.inf: 100.0}
