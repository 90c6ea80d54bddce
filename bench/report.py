"""The results of a run: JSON, a Markdown report, PNG plots and the BENCHMARKS.md summary.

Rendering is pure (data in, text out) except for :func:`write` and the plot functions, which
write files. Every figure is given with the median and the range over the repeats, and every
comparison as a ratio ours / theirs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STEM = "pipeline"
PLOTS = {
    "throughput": f"{STEM}-throughput.png",
    "latency": f"{STEM}-latency.png",
    "cpu": f"{STEM}-cpu.png",
}
SYSTEM_NAMES = {"ours": "citystream", "cpipe": "mosquitto_sub | kcat (C)", "quix": "Quix Streams"}
HOPS = {
    "device_kafka": "device -> Kafka",
    "device_bridge": "device -> bridge",
    "bridge_kafka": "bridge -> Kafka",
    "device_alert": "device -> alert",
    "device_influx": "device -> InfluxDB write",
}
ROLE_ORDER = (
    "loadgen", "mosquitto", "ingest", "cpipe", "quix-source", "kafka",
    "jobs", "quix-windows", "sink", "influxd",
)  # fmt: skip
RATIO_LABELS = {
    "hop_cpu_per_million_vs_cpipe": "MQTT -> Kafka hop, CPU-s per million: bridge / C pipe",
    "hop_cpu_per_million_vs_quix": "MQTT -> Kafka hop, CPU-s per million: bridge / Quix source",
    "hop_p99_ms_vs_cpipe": "device -> Kafka p99: ours / C pipe",
    "hop_p99_ms_vs_quix": "device -> Kafka p99: ours / Quix",
    "hop_peak_rss_vs_cpipe": "MQTT -> Kafka hop, peak RSS: bridge / C pipe",
    "hop_peak_rss_vs_quix": "MQTT -> Kafka hop, peak RSS: bridge / Quix source",
    "windows_cpu_per_million_vs_quix": "stream processing, CPU-s per million: Faust jobs / Quix windows",
    "windows_peak_rss_vs_quix": "stream processing, peak RSS: Faust jobs / Quix windows",
    "total_cpu_per_million_vs_quix": "own processes, CPU-s per million: ours / Quix (ours does more work)",
    "hop_max_vs_cpipe": "MQTT -> Kafka hop at full speed, msg/s: bridge / C pipe",
    "hop_max_vs_quix": "MQTT -> Kafka hop at full speed, msg/s: bridge / Quix source",
}


# -- small formatting helpers -------------------------------------------------------------------


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def fmt_spread(s: Mapping[str, float] | None, digits: int = 0) -> str:
    """``median [min-max]`` (just the value when there is one run)."""
    if not s:
        return "-"
    if s.get("n", 1) <= 1 or s["min"] == s["max"]:
        return fmt(s["median"], digits)
    return f"{fmt(s['median'], digits)} [{fmt(s['min'], digits)}-{fmt(s['max'], digits)}]"


def _w1(data: Mapping[str, Any]) -> Mapping[str, Any]:
    return data.get("summary", {}).get("W1", {})  # type: ignore[no-any-return]


def _fig(data: Mapping[str, Any], system: str, key: str) -> Mapping[str, float] | None:
    return _w1(data).get("systems", {}).get(system, {}).get(key)  # type: ignore[no-any-return]


def _median(data: Mapping[str, Any], system: str, key: str) -> float | None:
    s = _fig(data, system, key)
    return None if s is None else s["median"]


# -- verdicts ------------------------------------------------------------------------------------


def w1_lost(data: Mapping[str, Any]) -> float | None:
    """Messages ours lost in W1 over every repeat (``None`` when W1 did not run for ours)."""
    lost = [s["figures"]["lost"] for s in data.get("segments", []) if s.get("workload") == "W1"
            and s.get("system") == "ours" and "figures" in s]  # fmt: skip
    return float(sum(lost)) if lost else None


def acceptable(data: Mapping[str, Any]) -> bool:
    """No segment failed and, when W1 ran for ours, it lost nothing."""
    if any("error" in s for s in data.get("segments", [])):
        return False
    lost = w1_lost(data)
    return lost is None or lost == 0


def headline(data: Mapping[str, Any]) -> list[str]:
    """A few lines for the terminal."""
    out = [f"{data.get('mode')} run, {data.get('duration_s')} s, {len(data.get('segments', []))} segments"]
    lost = w1_lost(data)
    if lost is not None:
        out.append(f"W1 ours: lost {fmt(lost)}, "
                   f"p99 device->InfluxDB {fmt(_median(data, 'ours', 'device_influx_p99_ms'))} ms, "
                   f"p99 device->alert {fmt(_median(data, 'ours', 'device_alert_p99_ms'))} ms, "
                   f"{fmt(_median(data, 'ours', 'system_cpu_s_per_million'), 1)} "
                   "CPU-s per million")  # fmt: skip
    w2 = data.get("summary", {}).get("W2")
    if w2:
        out.append(f"W2 knee: {fmt(w2.get('knee'))} msg/s")
    w3 = data.get("summary", {}).get("W3")
    if w3:
        out.append(
            f"W3 burst: lost {fmt(w3.get('lost'))}, back to steady p99 after {fmt(w3.get('recovery_s'))} s"
        )
    for name, s in _all_ratios(data).items():
        if s:
            out.append(f"ratio {name}: {fmt_spread(s, 2)}")
    for seg in data.get("segments", []):
        if "error" in seg or "skipped" in seg:
            out.append(f"segment {seg['name']}: {seg.get('error') or seg.get('skipped')}"[:300])
    return out


def _all_ratios(data: Mapping[str, Any]) -> dict[str, Mapping[str, float] | None]:
    ratios: dict[str, Mapping[str, float] | None] = dict(_w1(data).get("ratios", {}))
    hop_max = data.get("summary", {}).get("max", {}).get("ratios", {})
    for name, value in hop_max.items():
        ratios[name] = None if value is None else {"median": value, "min": value, "max": value, "n": 1.0}
    return ratios


# -- markdown --------------------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def cells(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"

    lines = [cells(header), "|" + "|".join("---" for _ in header) + "|"]
    lines += [cells(row) for row in rows]
    return [*lines, ""]


def ran_with(data: Mapping[str, Any]) -> str:
    """How the results were made: one command, or several runs assembled into one report."""
    assembled = data.get("assembled")
    if assembled:
        runs = ", ".join(f"`{command}` ({started})" for command, started in assembled)
        return f"Assembled from separate runs: {runs} ({data.get('duration_s')} s in all)."
    return f"Command: `{data.get('command', 'citystream bench')}` ({data.get('duration_s')} s)."


def machine_lines(data: Mapping[str, Any]) -> list[str]:
    m = data.get("machine", {})
    services = ", ".join(f"{k} {v}" for k, v in m.get("services", {}).items())
    tools = ", ".join(f"{k}: {v}" for k, v in m.get("tools", {}).items())
    return [
        f"- CPU: {m.get('cpu')} x {m.get('cpus')} (shared with other work), {m.get('memory_gib')} GiB RAM, "
        f"Linux {m.get('kernel')}, Python {m.get('python')}",
        f"- Services: {services}",
        f"- Peers: Quix Streams {m.get('quixstreams') or '-'}; {tools}",
        f"- Load average (1, 5, 15 min) at start {m.get('load_avg_at_start')}, "
        f"at end {m.get('load_avg_at_end')}",
    ]


W1_ROWS = (
    ("offered_rate", "offered msg/s (load generator, whole run)", 0),
    ("hop_rate", "MQTT -> Kafka msg/s (first to last append)", 0),
    ("raw_rate", "into Kafka msg/s (steady part)", 0),
    ("jobs_rate", "stream jobs msg/s (steady part)", 0),
    ("sink_rate", "InfluxDB sink msg/s (steady part)", 0),
    ("quix-windows_rate", "Quix windows msg/s (steady part)", 0),
    ("lost", "lost (by device, seq)", 0),
    ("duplicates", "duplicates in Kafka", 0),
    ("device_kafka_p50_ms", "device -> Kafka p50 ms", 0),
    ("device_kafka_p99_ms", "device -> Kafka p99 ms", 0),
    ("device_kafka_p999_ms", "device -> Kafka p99.9 ms", 0),
    ("device_kafka_max_ms", "device -> Kafka max ms", 0),
    ("device_alert_p50_ms", "device -> alert p50 ms", 0),
    ("device_alert_p99_ms", "device -> alert p99 ms", 0),
    ("device_alert_max_ms", "device -> alert max ms", 0),
    ("device_influx_p50_ms", "device -> InfluxDB write p50 ms", 0),
    ("device_influx_p99_ms", "device -> InfluxDB write p99 ms", 0),
    ("device_influx_p999_ms", "device -> InfluxDB write p99.9 ms", 0),
    ("device_influx_max_le_ms", "device -> InfluxDB write max ms (at most; bucket bound)", 0),
    ("influx_missing", "readings not in InfluxDB at the end", 0),
    ("jobs_backlog_end", "stream jobs backlog when stopped (messages)", 0),
    ("sink_backlog_end", "sink backlog when stopped (messages)", 0),
    ("quix-windows_backlog_end", "Quix windows backlog when stopped (messages)", 0),
    ("alerts_raised", "alerts raised", 0),
    ("hop_cpu_s_per_million", "MQTT -> Kafka process, CPU-s per million", 1),
    ("hop_peak_rss_mib", "MQTT -> Kafka process, peak RSS MiB", 0),
    ("system_cpu_s_per_million", "all own processes, CPU-s per million", 1),
)


def w1_lines(data: Mapping[str, Any]) -> list[str]:
    systems = [s for s in ("ours", "cpipe", "quix") if s in _w1(data).get("systems", {})]
    if not systems:
        return ["W1 did not run.", ""]
    rows = []
    for key, label, digits in W1_ROWS:
        cells = [fmt_spread(_fig(data, s, key), digits) for s in systems]
        if any(c != "-" for c in cells):
            rows.append([label, *cells])
    return _table(["figure (median [range])", *(SYSTEM_NAMES[s] for s in systems)], rows)


def cpu_lines(data: Mapping[str, Any]) -> list[str]:
    systems = [s for s in ("ours", "cpipe", "quix") if s in _w1(data).get("systems", {})]
    rows = []
    for role in ROLE_ORDER:
        cells = []
        for s in systems:
            cpu = _fig(data, s, f"{role}_cpu_s_per_million")
            rss = _fig(data, s, f"{role}_peak_rss_mib")
            cells.append("-" if cpu is None else f"{fmt_spread(cpu, 1)} / {fmt_spread(rss)}")
        if any(c != "-" for c in cells):
            rows.append([role, *cells])
    if not rows:
        return []
    return _table(
        ["process", *(f"{SYSTEM_NAMES[s]}: CPU-s per million / peak RSS MiB" for s in systems)], rows
    )


def ratio_lines(data: Mapping[str, Any]) -> list[str]:
    rows = [
        [RATIO_LABELS.get(name, name), fmt_spread(s, 2), fmt(s["n"]) if s else "-"]
        for name, s in _all_ratios(data).items()
        if s
    ]
    if not rows:
        return ["No ratios (a peer did not run).", ""]
    return _table(["comparison (below 1: ours uses less / is faster)", "ratio median [range]", "runs"], rows)


def max_lines(data: Mapping[str, Any]) -> list[str]:
    rates = data.get("summary", {}).get("max", {}).get("hop_rate", {})
    if not rates:
        return []
    offered = {s["system"]: s.get("figures", {}).get("offered_rate") for s in data.get("segments", [])
               if s.get("workload") == "max"}  # fmt: skip
    rows = [[SYSTEM_NAMES.get(s, s), fmt(r), fmt(offered.get(s))] for s, r in rates.items()]
    return _table(["system", "MQTT -> Kafka msg/s at full speed", "load generator msg/s"], rows)


def w2_lines(data: Mapping[str, Any]) -> list[str]:
    w2 = data.get("summary", {}).get("W2")
    if not w2:
        return ["W2 did not run.", ""]
    rows = []
    for step in w2.get("steps", []):
        growth = ", ".join(f"{k} {fmt(v)}" for k, v in step["growth"].items())
        rows.append([fmt(step["rate"]), fmt(step["offered"]), growth, fmt(step["lost"]), step["reason"]])
    knees = ", ".join(f"{stage} {fmt(v)}" for stage, v in (w2.get("knees") or {}).items())
    lines = [
        f"Knee: **{fmt(w2.get('knee'))} msg/s** (highest step before the first failing one; "
        f"'-': the first step already failed). Per stage: {knees or '-'} msg/s."
        + (
            " The load generator could not offer the higher steps."
            if w2.get("limited_by_load_generator")
            else ""
        ),
        "",
    ]
    return lines + _table(
        ["step msg/s", "offered msg/s", "backlog growth msg/s (bridge, jobs, sink)", "lost", "verdict"],
        rows,
    )


def w3_lines(data: Mapping[str, Any]) -> list[str]:
    w3 = data.get("summary", {}).get("W3")
    if not w3:
        return ["W3 did not run.", ""]
    return [
        f"- lost: {fmt(w3.get('lost'))}, duplicates in Kafka: {fmt(w3.get('duplicates'))}",
        f"- steady p99 device -> Kafka before the burst: {fmt(w3.get('steady_p99_ms'))} ms; back at or under "
        f"1.2 x that {fmt(w3.get('recovery_s'))} s after the burst ended",
        "- consumer lag back to its steady level after the burst: "
        f"jobs {fmt(w3.get('jobs_lag_recovery_s'))} s, "
        f"sink {fmt(w3.get('sink_lag_recovery_s'))} s",
        "",
    ]


def segment_lines(data: Mapping[str, Any]) -> list[str]:
    rows = []
    for s in data.get("segments", []):
        if "error" in s or "skipped" in s:
            status = (s.get("error") or s.get("skipped") or "").splitlines()[0][:120]
        else:
            status = "ok" + (f", stopped: {s['stopped']}" if s.get("stopped") else "")
        load = s.get("load", {})
        rows.append([
            s["name"], fmt(load.get("sent")), fmt(load.get("rate")), fmt(s.get("startup_s"), 1),
            fmt(s.get("drain_s"), 1), fmt(s.get("account_s"), 1), fmt(s.get("segment_s"), 1), status,
        ])  # fmt: skip
    return _table(
        ["segment", "sent", "load msg/s", "start s", "drain s", "read-back s", "total s", "status"], rows
    )


NOTES = [
    "- Every topic of a run is created with `message.timestamp.type=LogAppendTime`: device -> Kafka is the "
    "broker's append time minus the device timestamp, measured the same way for all three systems. Device "
    "timestamps are the load generator's schedule; its clock offset (connect time) is subtracted.",
    "- A difference below zero (a few milliseconds at most: the load generator sends up to 2 ms ahead of "
    "its schedule and timestamps are whole milliseconds) is recorded as 0; the JSON counts them and gives "
    "the lowest value.",
    "- device -> alert: append time of each `raised` alert event minus the newest of the readings it names "
    "(by partition and offset in telemetry.raw). Alerts come from short spikes on a few air-quality sensors.",
    "- device -> InfluxDB write comes from the sink's own Prometheus histogram (buckets 5, 10, 25, 50, 100, "
    "250, 500 ms, 1 s, ...), interpolated inside a bucket like Prometheus' `histogram_quantile`; it is as "
    "precise as those buckets. InfluxDB cannot hold duplicates (same series and time overwrite), so its "
    "count "
    "is of distinct readings.",
    "- Loss and duplicates are counted per (device, seq) on the system's raw topic against what the load "
    "generator handed to its connections.",
    "- CPU seconds and peak RSS come from /proc for every process tree (the Quix source runs in a child "
    "process). Mosquitto, the Kafka JVM and influxd are shared with everything else on the machine; their "
    "figures include that.",
    "- The peers do less than ours: the C pipe and the Quix source acknowledge MQTT on receipt (ours only "
    "after Kafka acknowledged) and do not validate; the Quix windows app computes count/mean/min/max windows "
    "only, while the Faust jobs also deduplicate, run the detectors, the alert lifecycle and data quality.",
    "- kcat reads its input in blocks and sends the last few lines of a run only when its input "
    "closes: those records arrive when the pipe is stopped (the C pipe's max latency shows it); they "
    "count as arrived, not lost. The pipe runs `mosquitto_sub` under `stdbuf -oL`.",
    "- Full speed (max) is bounded by the load generator on the same two cores: a hop rate close to "
    "the load generator's says the hop was not the limit.",
    "- The machine is shared and noisy: figures are medians over the repeats with their range.",
]


def markdown(data: Mapping[str, Any], plots: Mapping[str, str] | None = None) -> str:
    mode = data.get("mode", "?")
    cfg = data.get("config", {})
    mode_cfg = cfg.get("mode", {})
    lines = [
        f"# Pipeline benchmark: {mode} run of {data.get('started', '?')}",
        "",
        ran_with(data),
        "",
        "## Machine",
        "",
        *machine_lines(data),
        "",
        "## Workloads",
        "",
        f"- W1 steady: {fmt(cfg.get('fleet'))} sensors at 1 Hz, QoS 1, {fmt(mode_cfg.get('w1_s'))} s, "
        f"{fmt(cfg.get('repeats'))} repeat(s) per system, interleaved.",
        f"- W2 knee: steps of {', '.join(fmt(r) for r in mode_cfg.get('w2_rates', []))} msg/s, "
        f"{fmt(mode_cfg.get('w2_step_s'))} s each.",
        f"- W3 burst: {fmt(mode_cfg.get('burst_factor'))}x the steady rate "
        f"for {fmt(mode_cfg.get('burst_s'))} s "
        "on top of W1.",
        f"- max: {fmt(mode_cfg.get('max_messages'))} messages as fast as the load generator can send them.",
        "",
        "## Ratios ours / theirs",
        "",
        *ratio_lines(data),
        "## W1 steady",
        "",
        *w1_lines(data),
        "### CPU and memory per process (W1)",
        "",
        *cpu_lines(data),
        "## MQTT -> Kafka at full speed",
        "",
        *max_lines(data),
        "## W2 knee",
        "",
        *w2_lines(data),
        "## W3 burst",
        "",
        *w3_lines(data),
    ]
    if plots:
        lines += ["## Plots", ""] + [f"![{name}]({path})" for name, path in plots.items()] + [""]
    lines += ["## Segments", "", *segment_lines(data), "## Method", "", *NOTES, ""]
    return "\n".join(lines)


def _load(path: Path) -> dict[str, Any] | None:
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return loaded


def stage_lines(results: Path) -> list[str]:
    """The per-stage benchmarks' latest figures (``python -m bench.simulator``, ``bench.ingest``,
    ``bench.jobs [--fleet air_quality]``, ``bench.sink``), against the stage issues' targets."""
    rows: list[list[str]] = []
    sim = _load(results / "simulator.json")
    for run in (sim or {}).get("runs", []):
        if run.get("paced_rate") is None:
            rows.append([
                f"simulator, QoS {run['qos']} ({fmt((sim or {}).get('fleet'))} devices)",
                f"{fmt(run['subscriber_rate'])} msg/s received, lost {fmt(run['lost'])}",
                f"{fmt(run['target'])} msg/s", "met" if run.get("meets_target") else "not met",
                str(sim and sim.get("when")),
            ])  # fmt: skip
    ingest = _load(results / "ingest.json")
    if ingest:
        target = ingest.get("target_msg_s")
        for how in ("drain", "live"):
            r = ingest["results"].get("bridge", {}).get(how)
            if r:
                rows.append([
                    f"bridge MQTT -> Kafka, {how} (QoS 1, ack after Kafka)",
                    f"{fmt(r['median_rate'])} msg/s, {fmt(r['median_cpu_s_per_million'], 1)} CPU-s/M, "
                    f"lost {fmt(r['lost'])}",
                    f"{fmt(target)} msg/s", "met" if r["median_rate"] >= (target or 0) else "not met",
                    str(ingest.get("started")),
                ])  # fmt: skip
    for name in ("jobs.json", "jobs-air_quality.json"):
        jobs = _load(results / name)
        if not jobs:
            continue
        target = jobs.get("target_readings_per_s") or 0.0
        quix = next((r for r in jobs["results"] if r["system"].startswith("quix")), None)
        for r in jobs["results"]:
            if r["system"].startswith("quix"):
                continue
            ratio = f", {r['readings_per_s'] / quix['readings_per_s']:.2f}x Quix windows" if quix else ""
            verdict = "met" if r["readings_per_s"] >= target else "not met"
            rows.append([
                f"stream jobs ({r['system'].removeprefix('faust: ')}), {jobs.get('fleet', 'air_quality')} "
                f"fleet, {jobs.get('metrics_per_reading')} metrics/reading",
                f"{fmt(r['readings_per_s'])} readings/s{ratio}",
                f"{fmt(target)} readings/s (all detectors)",
                verdict if "all detectors" in r["system"] else "-",
                str(jobs.get("started", "")),
            ])  # fmt: skip
    sink = _load(results / "sink.json")
    if sink:
        t = sink.get("throughput", {})
        rows.append([
            "InfluxDB sink (commit after write)",
            f"{fmt(t.get('points_per_s'))} points/s, {fmt(t.get('points_counted_in_influxdb'))} of "
            f"{fmt(t.get('readings'))} counted",
            "-", "-", str(sink.get("when")),
        ])  # fmt: skip
    if not rows:
        return ["No per-stage results yet.", ""]
    return [*_table(["stage", "measured", "target", "", "when"], rows), ""]


def summary_page(data: Mapping[str, Any], results: Path) -> str:
    """BENCHMARKS.md: the latest figures, how to reproduce them, and the machine."""
    w2 = data.get("summary", {}).get("W2") or {}
    w3 = data.get("summary", {}).get("W3") or {}
    cfg = data.get("config", {})
    try:
        rel = str(results.resolve().relative_to(REPO))
    except ValueError:
        rel = str(results)
    lines = [
        "# Benchmarks",
        "",
        f"Latest results: {data.get('mode')} mode, {data.get('started')}. {ran_with(data)} "
        f"Full report: `{rel}/{STEM}.md`; data: `{rel}/{STEM}.json`.",
        "",
        "Reproduce (starts the local stack if needed):",
        "",
        "```",
        "make bench                      # full: W1 x3 repeats, W2, W3, max (at most 20 minutes)",
        "citystream bench --quick        # smaller fleet, one repeat (at most 5 minutes)",
        "citystream bench --workload W2  # one workload",
        "```",
        "",
        "## Machine",
        "",
        *machine_lines(data),
        "",
        "## Headline",
        "",
        f"- W1 ({fmt(cfg.get('fleet'))} sensors at 1 Hz, QoS 1): lost {fmt(w1_lost(data))}; "
        f"p99 device -> InfluxDB write {fmt_spread(_fig(data, 'ours', 'device_influx_p99_ms'))} ms; "
        f"p99 device -> alert {fmt_spread(_fig(data, 'ours', 'device_alert_p99_ms'))} ms; "
        f"p99 device -> Kafka {fmt_spread(_fig(data, 'ours', 'device_kafka_p99_ms'))} ms",
        f"- CPU seconds per million messages, our own processes: "
        f"{fmt_spread(_fig(data, 'ours', 'system_cpu_s_per_million'), 1)} "
        f"(bridge {fmt_spread(_fig(data, 'ours', 'ingest_cpu_s_per_million'), 1)}, "
        f"jobs {fmt_spread(_fig(data, 'ours', 'jobs_cpu_s_per_million'), 1)}, "
        f"sink {fmt_spread(_fig(data, 'ours', 'sink_cpu_s_per_million'), 1)})",
        f"- W2 knee: {fmt(w2.get('knee'))} msg/s ("
        + ", ".join(f"{stage} {fmt(v)}" for stage, v in (w2.get("knees") or {}).items())
        + "; '-': not even the first step held)",
        f"- W3 burst: lost {fmt(w3.get('lost'))}; back to the steady p99 after {fmt(w3.get('recovery_s'))} s",
        "",
        "## Ratios ours / theirs",
        "",
        *ratio_lines(data),
        "## W1 side by side",
        "",
        *w1_lines(data),
        "## Stages on their own",
        "",
        *stage_lines(results),
        "## Method",
        "",
        *NOTES,
        "",
    ]
    return "\n".join(lines)


# -- plots ----------------------------------------------------------------------------------------


def _rates(
    timeline: Sequence[Mapping[str, float]], key: str, window_s: float = 1.0
) -> tuple[list[float], list[float]]:
    """Rates of a cumulative series, each over at least ``window_s`` (consumers commit every few s)."""
    points = [(row["t"], row[key]) for row in timeline if key in row]
    xs, ys = [], []
    j = 0
    for t, v in points[1:]:
        while j + 1 < len(points) and points[j + 1][0] <= t - window_s:
            j += 1
        t0, v0 = points[j]
        if t > t0:
            xs.append(t)
            ys.append((v - v0) / (t - t0))
    return xs, ys


def _first(data: Mapping[str, Any], workload: str, system: str) -> Mapping[str, Any] | None:
    for s in data.get("segments", []):
        if s.get("workload") == workload and s.get("system") == system and "timeline" in s:
            return s  # type: ignore[no-any-return]
    return None


def plot_throughput(data: Mapping[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    panels = [("W1", "ours"), ("W1", "cpipe"), ("W1", "quix"), ("W2", "ours"), ("W3", "ours")]
    present = [(w, s, seg) for w, s in panels if (seg := _first(data, w, s)) is not None]
    if not present:
        return
    fig, axes = plt.subplots(len(present), 1, figsize=(10, 2.6 * len(present)), squeeze=False)
    for ax, (workload, system, seg) in zip(axes[:, 0], present, strict=True):
        timeline = seg["timeline"]
        for key, label, window in (
            ("sent", "load generator", 1.0),
            ("raw", "into Kafka", 1.0),
            ("jobs", "stream jobs (5 s average)", 5.0),
            ("sink", "InfluxDB sink", 1.0),
            ("quix-windows", "Quix windows (5 s average)", 5.0),
        ):
            xs, ys = _rates(timeline, key, window)
            if xs and any(ys):
                ax.plot(xs, ys, label=label, linewidth=1.2)
        ax.set_title(f"{workload}: {SYSTEM_NAMES[system]}", fontsize=10)
        ax.set_ylabel("msg/s")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    axes[-1, 0].set_xlabel("seconds since the load started")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency(data: Mapping[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    bars: list[tuple[str, list[float]]] = []
    for system in ("ours", "cpipe", "quix"):
        for hop, label in HOPS.items():
            values = [_median(data, system, f"{hop}_{p}_ms") for p in ("p50", "p99", "p999")]
            if values[0] is not None or values[1] is not None:
                bars.append((f"{SYSTEM_NAMES[system]}\n{label}", [v or 0.0 for v in values]))
    if not bars:
        return
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(bars)), 4.5))
    width = 0.27
    for i, name in enumerate(("p50", "p99", "p99.9")):
        xs = [k + (i - 1) * width for k in range(len(bars))]
        ax.bar(xs, [max(v[i], 0.5) for _, v in bars], width, label=name)
    ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("ms (log scale)")
    ax.set_title("W1 latency per hop (median over repeats)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_cpu(data: Mapping[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    systems = [s for s in ("ours", "cpipe", "quix") if s in _w1(data).get("systems", {})]
    roles = [r for r in ROLE_ORDER if any(_median(data, s, f"{r}_cpu_s_per_million") for s in systems)]
    if not roles:
        return
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(roles) * len(systems) / 2), 4.5))
    width = 0.8 / len(systems)
    for i, system in enumerate(systems):
        values = [_median(data, system, f"{r}_cpu_s_per_million") or 0.0 for r in roles]
        xs = [k + (i - (len(systems) - 1) / 2) * width for k in range(len(roles))]
        ax.bar(xs, values, width, label=SYSTEM_NAMES[system])
    ax.set_xticks(range(len(roles)), roles, fontsize=8)
    ax.set_ylabel("CPU seconds per million messages")
    ax.set_title("W1 CPU per process (median over repeats; shared services include other load)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def merge(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One result from several saved runs (each workload run on its own): segments in order.

    The machine and mode are the first run's; the page says that it was assembled.
    """
    from bench.workloads import summarise

    first = runs[0]
    segments = [seg for run in runs for seg in run.get("segments", [])]
    return {
        **first,
        "command": "; ".join(str(run.get("command", "citystream bench")) for run in runs),
        "assembled": [[run.get("command", "citystream bench"), run.get("started")] for run in runs],
        "duration_s": round(sum(float(run.get("duration_s") or 0.0) for run in runs), 1),
        "segments": segments,
        "summary": summarise(segments),
    }


def write(data: Mapping[str, Any], out: Path) -> list[Path]:
    """``pipeline.json``, the three plots and ``pipeline.md`` in ``out``; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    json_path = out / f"{STEM}.json"
    json_path.write_text(json.dumps(data, indent=1, default=str) + "\n")
    paths.append(json_path)
    plots: dict[str, str] = {}
    for name, draw in (("throughput", plot_throughput), ("latency", plot_latency), ("cpu", plot_cpu)):
        target = out / PLOTS[name]
        target.unlink(missing_ok=True)
        draw(data, target)
        if target.exists():
            plots[name] = target.name
            paths.append(target)
    md_path = out / f"{STEM}.md"
    md_path.write_text(markdown(data, plots))
    paths.append(md_path)
    return paths
