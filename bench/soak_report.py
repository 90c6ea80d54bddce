"""The soak's report: ``soak.json``, ``soak.md`` and ``soak.png`` (RSS and lag over time)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.soak import LABELS, OTHERS, OURS

STEM = "soak"
MIB = 2**20


def _mib(value: float | None) -> str:
    return "–" if value is None else f"{value / MIB:,.1f}"


def _n(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _verdict(ok: object) -> str:
    return "pass" if ok else "FAIL"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def rss_lines(v: Mapping[str, Any]) -> list[str]:
    w = v["window"]
    a, b = w["rss_first_minute"], w["rss_last_minute"]
    rows = []
    for role in (*OURS, *OTHERS):
        r = v["rss"].get(role)
        if r is None:
            continue
        growth = "–" if r["growth"] is None else f"{r['growth']:+.1%}"
        verdict = (
            _verdict(r["ok"]) + ("" if r["ok"] else f" ({r['reason']})") if role in OURS else "(information)"
        )
        rows.append(
            [
                LABELS[role],
                _mib(r["start_bytes"]),
                _mib(r["end_bytes"]),
                _mib(r["peak_bytes"]),
                growth,
                verdict,
            ]
        )
    head = (
        "RSS of each process tree: the median of the samples in the first minute after the warm-up "
        f"({a[0]:.0f}–{a[1]:.0f} s) against the median in the last minute of the load "
        f"({b[0]:.0f}–{b[1]:.0f} s), in seconds since the harness started; limit: growth below "
        f"{v['limits']['rss_growth']:.0%} for each of ours."
    )
    header = ["process", "start MiB", "end MiB", "peak after warm-up MiB", "growth", "verdict"]
    return [head, "", *_table(header, rows)]


def lag_lines(v: Mapping[str, Any], rate: float) -> list[str]:
    lim = v["limits"]
    rows = []
    for name, lag in sorted(v["lag"].items()):
        reason = "" if lag["ok"] else f" ({lag['reason']})"
        rows.append(
            [
                name,
                _n(lag["first_max"]),
                _n(lag["last_max"]),
                _n(lag["overall_max"]),
                _n(lag["bound"]),
                _verdict(lag["ok"]) + reason,
            ]
        )
    head = (
        "Consumer lag (messages not yet committed) per consumer group and topic, after the warm-up cut "
        "in thirds. Bounded: the last third's maximum at most the first third's plus "
        f"{lim['lag_margin_s']:.0f} s of input ({lim['lag_margin_s'] * rate:,.0f} messages), and every "
        f"lag below {lim['lag_bound_s']:.0f} s of input ({lim['lag_bound_s'] * rate:,.0f} messages)."
    )
    header = ["group/topic", "max, first third", "max, last third", "max after warm-up", "bound", "verdict"]
    return [head, "", *_table(header, rows)]


def markdown(data: Mapping[str, Any], plot: str | None) -> str:
    c, v, m = data["config"], data["verdicts"], data["machine"]
    seg = data["segment"]
    lines = [
        "# Soak",
        "",
        f"`{data.get('command', 'citystream soak')}`, started {data['started']}, "
        f"wall time {data['duration_s'] / 60:.1f} min.",
        "",
        f"- Rate: {c['rate']:,.0f} msg/s ({c['rate_source']}); {c['fleet']:,} sensors, each every "
        f"{c['interval_s']} s, QoS 1, for {c['minutes']:g} min; warm-up {c['warmup_s'] / 60:g} min; "
        f"a sample every {c['sample_s']:.0f} s.",
        f"- Machine: {m['cpus']} × {m['cpu']}, {m['memory_gib']} GiB; shared with other work. Load average "
        f"at the start {m['load_avg_at_start']}, at the end {m['load_avg_at_end']}"
        + (
            f"; 1-minute load average during the load: median {v['load_avg']['median']}, "
            f"max {v['load_avg']['max']}."
            if v.get("load_avg")
            else "."
        ),
        "",
    ]
    if "error" in seg:
        lines += [f"**The run failed:** {seg['error']}", ""]
    if v.get("window") is None:
        lines += [f"**No verdicts:** {v.get('reason')}", ""]
        return "\n".join(lines)
    checks = v["checks"]
    lines += [
        f"**Verdict: {_verdict(v['ok'])}** — "
        + ", ".join(f"{name} {_verdict(ok)}" for name, ok in checks.items()),
        "",
        "## Memory",
        "",
        *rss_lines(v),
        "",
        "## Lag",
        "",
        *lag_lines(v, c["rate"]),
        "",
        "## Throughput after the warm-up",
        "",
    ]
    t = v["throughput"]
    load = v["load"]
    lines += _table(
        ["", "msg/s"],
        [
            ["offered by the load generator", _n(t["offered"], 1)],
            ["into Kafka (raw topic)", _n(t["into_kafka"], 1)],
            ["received by the bridge", _n(t["bridge_received"], 1)],
            ["committed by the stream jobs (raw topic)", _n(t["jobs_committed"], 1)],
            ["committed by the InfluxDB sink (raw topic)", _n(t["sink_committed"], 1)],
            ["points written by the sink (points/s)", _n(t["sink_points_written"], 1)],
        ],
    )
    lines += ["", f"Load held: {_verdict(load['ok'])} ({load['reason']})."]
    loss = v["loss"]
    ledger = seg.get("ledger") or {}
    lines += [
        "",
        "## Loss",
        "",
        f"{loss['sent']:,} sent; {loss['lost']:,} lost before Kafka, {loss['duplicates']:,} duplicates "
        f"(at-least-once allows them), {_n(ledger.get('unexpected'))} unexpected (probes); "
        f"{_n(loss['influx_missing'])} distinct readings missing in InfluxDB "
        f"({_n((seg.get('influx') or {}).get('readings_written'))} written): {_verdict(loss['ok'])} "
        f"({loss['reason']}). Drain after the load: {_n(seg.get('drain_s'), 1)} s.",
        "",
        "## Logs",
        "",
        f"Exit codes: {', '.join(f'{k} {c}' for k, c in v['exit_codes'].items()) or 'none'}.",
        "",
    ]
    if v["logs"]:
        rows = [
            [
                x["process"],
                str(x["number"]),
                "`" + x["text"][:200].replace("|", "\\|") + "`",
                x["expected"] or "**no**",
            ]
            for x in v["logs"][:50]
        ]
        lines += _table(["process", "line", "text", "expected"], rows)
        if len(v["logs"]) > 50:
            lines.append(f"... and {len(v['logs']) - 50} more (soak.json has them all).")
    else:
        lines.append(
            "No ERROR, CRITICAL or traceback line in the logs of the bridge, the stream jobs, the sink "
            "and the load generator."
        )
    if v["expected_logs"]:
        lines += ["", "Expected error lines (listed in `bench/soak_verdicts.py`):", ""]
        lines += [f"- {e['process']}: `{e['pattern']}`: {e['reason']}" for e in v["expected_logs"]]
    if plot:
        lines += ["", f"![RSS and lag over time]({plot})"]
    return "\n".join(lines) + "\n"


def plot(data: Mapping[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    timeline = [row for row in data["timeline"] if "drained" not in row]
    window = data["verdicts"].get("window")
    if not timeline or window is None:
        return
    t0 = window["load_start_s"]
    fig, axes = plt.subplots(3, 1, figsize=(10, 10), sharex=True)
    for ax, roles in ((axes[0], OURS), (axes[1], OTHERS)):
        for role in roles:
            points = [((r["t"] - t0) / 60, r[f"rss/{role}"] / MIB) for r in timeline if f"rss/{role}" in r]
            if points:
                ax.plot(*zip(*points, strict=True), label=LABELS[role], linewidth=1.2)
        ax.set_ylabel("RSS MiB")
        ax.legend(fontsize=8, loc="upper left")
    axes[0].set_title("RSS of our processes", fontsize=10)
    axes[1].set_title(
        "RSS of the load generator and the shared services (information; log scale)", fontsize=10
    )
    axes[1].set_yscale("log")
    keys = sorted({k for r in timeline for k in r if k.startswith("lag/")})
    for key in keys:
        points = [((r["t"] - t0) / 60, r[key]) for r in timeline if key in r]
        axes[2].plot(*zip(*points, strict=True), label=key.removeprefix("lag/"), linewidth=1.0)
    axes[2].set_ylabel("messages")
    axes[2].set_title("Consumer lag per group/topic", fontsize=10)
    if keys:
        axes[2].legend(fontsize=8, loc="upper left")
    axes[2].set_xlabel("minutes since the load started")
    warm = (window["after_warmup_s"] - t0) / 60
    for ax in axes:
        ax.axvspan(0, warm, color="grey", alpha=0.12, linewidth=0)
        for a, b in (window["rss_first_minute"], window["rss_last_minute"]):
            ax.axvspan((a - t0) / 60, (b - t0) / 60, color="tab:green", alpha=0.08, linewidth=0)
        ax.grid(alpha=0.3)
    fig.suptitle("Soak: grey = warm-up, green = the minutes whose RSS medians are compared", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(data: Mapping[str, Any], out: Path) -> list[Path]:
    """``soak.json``, ``soak.png`` and ``soak.md`` in ``out``; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path, md_path = out / f"{STEM}.json", out / f"{STEM}.png", out / f"{STEM}.md"
    json_path.write_text(json.dumps(data, indent=1, default=str) + "\n")
    png_path.unlink(missing_ok=True)
    plot(data, png_path)
    md_path.write_text(markdown(data, png_path.name if png_path.exists() else None))
    return [p for p in (json_path, png_path, md_path) if p.exists()]


def headline(data: Mapping[str, Any]) -> list[str]:
    v = data["verdicts"]
    if v.get("window") is None:
        return [f"soak: no verdicts ({v.get('reason')})"]
    out = [f"soak: {_verdict(v['ok'])} " + ", ".join(f"{k} {_verdict(ok)}" for k, ok in v["checks"].items())]
    for role in OURS:
        r = v["rss"][role]
        growth = "–" if r["growth"] is None else f"{r['growth']:+.1%}"
        out.append(f"  RSS {role}: {_mib(r['start_bytes'])} -> {_mib(r['end_bytes'])} MiB ({growth})")
    for name, lag in sorted(v["lag"].items()):
        out.append(
            f"  lag {name}: first third max {_n(lag['first_max'])}, last third max {_n(lag['last_max'])}"
        )
    return out
