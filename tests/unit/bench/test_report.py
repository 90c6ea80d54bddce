"""Rendering the report and the summary page from synthetic results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import report
from bench.workloads import max_summary, w1_summary


def figures(system: str, scale: float) -> dict[str, float]:
    out = {
        "offered_rate": 2000.0,
        "hop_rate": 2001.0,
        "lost": 0.0,
        "duplicates": 0.0,
        "device_kafka_p50_ms": 3.0 * scale,
        "device_kafka_p99_ms": 30.0 * scale,
        "device_kafka_p999_ms": 60.0 * scale,
        "hop_cpu_s_per_million": 100.0 * scale,
        "hop_peak_rss_mib": 50.0 * scale,
        "system_cpu_s_per_million": 300.0 * scale,
        "mosquitto_cpu_s_per_million": 80.0,
        "mosquitto_peak_rss_mib": 93.0,
    }
    if system == "ours":
        out |= {"device_influx_p99_ms": 900.0, "device_alert_p99_ms": 1200.0, "jobs_cpu_s_per_million": 500.0}
    return out


def data() -> dict[str, Any]:
    segments: list[dict[str, Any]] = []
    for repeat, scale in ((1, 1.0), (2, 1.2)):
        for system in ("ours", "cpipe"):
            segments.append({
                "name": f"W1-{system}-r{repeat}", "workload": "W1", "system": system, "repeat": repeat,
                "figures": figures(system, scale if system == "ours" else 1.0),
                "load": {"sent": 50_000, "rate": 2000.0}, "startup_s": 3.0, "drain_s": 1.0,
                "timeline": [{"t": 0.0, "sent": 0.0, "raw": 0.0}, {"t": 1.0, "sent": 2000.0, "raw": 1990.0}],
            })  # fmt: skip
    segments.append({"name": "max-ours", "workload": "max", "system": "ours", "repeat": 0,
                     "figures": {"hop_rate": 10_000.0, "offered_rate": 15_000.0}})  # fmt: skip
    segments.append({"name": "max-cpipe", "workload": "max", "system": "cpipe", "repeat": 0,
                     "figures": {"hop_rate": 40_000.0, "offered_rate": 30_000.0}})  # fmt: skip
    segments.append({"name": "W3-ours", "workload": "W3", "system": "ours", "repeat": 0, "skipped": "budget"})
    w2 = {
        "knee": 1000.0,
        "steps": [
            {"rate": 1000.0, "offered": 1000.0, "growth": {"bridge": 0.0, "jobs": 5.0}, "sent": 10_000,
             "lost": 0, "ok": True, "reason": "ok"},
            {"rate": 2500.0, "offered": 2400.0, "growth": {"bridge": 0.0, "jobs": 900.0}, "sent": 25_000,
             "lost": 0, "ok": False, "reason": "lag growing: jobs"},
        ],
    }  # fmt: skip
    return {
        "mode": "quick",
        "started": "2026-01-01T00:00:00+0000",
        "duration_s": 240.0,
        "command": "citystream bench --quick",
        "machine": {"cpu": "Test CPU", "cpus": 2, "services": {"kafka": "4.0.2"}, "tools": {"kcat": "1.7.1"}},
        "config": {"fleet": 2000, "repeats": 2, "mode": {"w1_s": 25, "w2_rates": [1000, 2500]}},
        "segments": segments,
        "summary": {"W1": w1_summary(segments), "max": max_summary(segments), "W2": w2},
    }


def test_markdown_has_every_section_and_escapes_pipes() -> None:
    text = report.markdown(data(), {"cpu": "pipeline-cpu.png"})
    for heading in ("## Machine", "## Ratios ours / theirs", "## W1 steady", "## W2 knee", "## W3 burst",
                    "## Segments", "## Method", "![cpu](pipeline-cpu.png)"):  # fmt: skip
        assert heading in text
    assert "mosquitto_sub \\| kcat (C)" in text
    assert "Knee: **1,000 msg/s**" in text
    assert "| device -> Kafka p99 ms | 33 [30-36] | 30 |" in text
    assert "| MQTT -> Kafka hop, CPU-s per million: bridge / C pipe | 1.10 [1.00-1.20] | 2 |" in text
    assert "0.25" in text  # hop max ratio 10,000 / 40,000
    assert "W3-ours" in text
    assert "budget" in text


def test_summary_page_states_the_headline_figures(tmp_path: Path) -> None:
    text = report.summary_page(data(), tmp_path)
    assert "make bench" in text
    assert "W2 knee: 1,000 msg/s" in text
    assert "p99 device -> InfluxDB write 900 ms" in text
    assert "p99 device -> alert 1,200 ms" in text
    assert "Test CPU x 2" in text


def test_verdicts_and_headline() -> None:
    d = data()
    assert report.acceptable(d)
    assert report.w1_lost(d) == 0
    d["segments"][0]["figures"]["lost"] = 3.0
    assert not report.acceptable(d)
    lines = report.headline(d)
    assert any("W2 knee: 1,000" in line for line in lines)
    assert any("W3-ours: budget" in line for line in lines)


def test_fmt_spread() -> None:
    assert report.fmt_spread(None) == "-"
    assert report.fmt_spread({"median": 2.0, "min": 2.0, "max": 2.0, "n": 3.0}, 1) == "2.0"
    assert report.fmt_spread({"median": 2.0, "min": 1.0, "max": 3.5, "n": 3.0}, 1) == "2.0 [1.0-3.5]"


def test_merge_of_separate_runs_recomputes_the_summary() -> None:
    a = data()
    b = {
        "mode": "quick",
        "started": "2026-01-01T01:00:00+0000",
        "duration_s": 60.0,
        "command": "citystream bench --workload W3 --quick",
        "segments": [{"name": "W3-ours", "workload": "W3", "system": "ours", "repeat": 0,
                      "ledger": {"lost": 0, "duplicates": 0},
                      "burst": {"steady_p99_ms": 40.0, "recovery_s": 3, "p99_per_s": [[0, 1.0]]}}],
    }  # fmt: skip
    merged = report.merge([a, b])
    assert merged["duration_s"] == 300.0
    assert len(merged["segments"]) == len(a["segments"]) + 1
    assert merged["summary"]["W3"] == {"steady_p99_ms": 40.0, "recovery_s": 3, "lost": 0, "duplicates": 0}
    assert merged["summary"]["W1"]["repeats"] == 2
    assert merged["assembled"][1] == ["citystream bench --workload W3 --quick", "2026-01-01T01:00:00+0000"]
    assert "Assembled from separate runs: `citystream bench --quick` (2026-01-01T00:00:00+0000)" in (
        report.markdown(merged)
    )
    assert merged["machine"]["cpu"] == "Test CPU"
