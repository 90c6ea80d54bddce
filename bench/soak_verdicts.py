"""The soak's verdicts: memory growth, bounded lag, error logs and loss. Pure: series in, verdicts out.

- **RSS**: per process, the median of the samples in the first minute after the warm-up against
  the median of the samples in the last minute of the load; it passes when it grew by less
  than ``RSS_GROWTH_LIMIT``. Medians of a minute (six samples at 10 s) are not moved by one
  garbage collection or one large batch in flight.
- **Lag**: per consumer group and topic, the time after the warm-up is cut in thirds; it passes
  when the largest lag of the last third is not above the largest of the first third plus
  ``LAG_MARGIN_S`` seconds of input, and no lag after the warm-up reached ``LAG_BOUND_S``
  seconds of input. A consumer that commits every few seconds reads as a saw tooth of a few
  seconds of input, so the margin is in seconds of input too.
- **Logs**: every ``ERROR`` or ``CRITICAL`` line and every traceback of each process's log;
  the ones that are expected are listed in ``EXPECTED_LOGS`` with the reason, and only the
  others fail the soak.
- **Loss**: every (device, seq) the load generator sent is in Kafka once at least, and every
  distinct reading is in InfluxDB.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

RSS_GROWTH_LIMIT = 0.10
"""A process passes when its RSS grew by less than this share after the warm-up."""
RSS_WINDOW_S = 60.0
"""The RSS at the start and at the end is the median of the samples over this long."""
LAG_MARGIN_S = 10.0
"""Seconds of input the last third's largest lag may exceed the first third's by."""
LAG_BOUND_S = 60.0
"""Seconds of input no lag after the warm-up may reach."""
OFFERED_SHARE = 0.9
"""The load counts as held when the load generator sent at least this share of the rate."""

Series = Sequence[tuple[float, float]]


class ExpectedLog(NamedTuple):
    process: str
    """Which process's log (``ingest``, ``jobs``, ``sink``, ``loadgen``); ``*`` for any."""
    pattern: str
    """A regular expression searched for in the line."""
    reason: str


EXPECTED_LOGS: tuple[ExpectedLog, ...] = ()
"""Error lines a soak may show without failing, each with the reason it is expected."""

ERROR_LINE = re.compile(r"\b(ERROR|CRITICAL)\b|^Traceback \(most recent call last\)")


def window(points: Series, start: float, end: float) -> list[float]:
    """The values of the samples taken in ``[start, end]``."""
    return [v for t, v in points if start <= t <= end]


class RssVerdict(NamedTuple):
    process: str
    start_bytes: float | None
    """Median over the first ``RSS_WINDOW_S`` after the warm-up."""
    end_bytes: float | None
    """Median over the last ``RSS_WINDOW_S`` of the load."""
    peak_bytes: float | None
    """The largest sample after the warm-up."""
    growth: float | None
    """``end / start - 1``."""
    samples: tuple[int, int]
    ok: bool
    reason: str


def rss_verdict(
    process: str, points: Series, after_warmup: float, load_end: float, limit: float = RSS_GROWTH_LIMIT
) -> RssVerdict:
    """Growth of one process's RSS (``points``: time, bytes) between the warm-up's end and the load's end."""
    first = window(points, after_warmup, after_warmup + RSS_WINDOW_S)
    last = window(points, load_end - RSS_WINDOW_S, load_end)
    peak = max(window(points, after_warmup, load_end), default=None)
    counts = (len(first), len(last))
    if not first or not last:
        return RssVerdict(process, None, None, peak, None, counts, ok=False, reason="too few samples")
    start, end = statistics.median(first), statistics.median(last)
    if start <= 0:
        return RssVerdict(process, start, end, peak, None, counts, ok=False, reason="no memory at the start")
    growth = end / start - 1.0
    ok = growth < limit
    reason = "ok" if ok else f"grew by {growth:.1%} (limit {limit:.0%})"
    return RssVerdict(process, start, end, peak, growth, counts, ok=ok, reason=reason)


class LagVerdict(NamedTuple):
    name: str
    """``group/topic``."""
    first_max: float | None
    """Largest lag in the first third after the warm-up (messages)."""
    last_max: float | None
    """Largest lag in the last third of the load (messages)."""
    overall_max: float | None
    """Largest lag after the warm-up (messages)."""
    margin: float
    bound: float
    ok: bool
    reason: str


def lag_verdict(
    name: str,
    points: Series,
    after_warmup: float,
    load_end: float,
    rate: float,
    *,
    margin_s: float = LAG_MARGIN_S,
    bound_s: float = LAG_BOUND_S,
) -> LagVerdict:
    """Whether one consumer's lag (``points``: time, messages) stayed bounded at ``rate`` msg/s."""
    third = (load_end - after_warmup) / 3
    first = window(points, after_warmup, after_warmup + third)
    last = window(points, load_end - third, load_end)
    overall = window(points, after_warmup, load_end)
    margin, bound = margin_s * rate, bound_s * rate
    if third <= 0 or not first or not last:
        return LagVerdict(name, None, None, None, margin, bound, ok=False, reason="too few samples")
    first_max, last_max, top = max(first), max(last), max(overall)
    reasons = []
    if last_max > first_max + margin:
        reasons.append(f"grew: last third up to {last_max:,.0f}, first third up to {first_max:,.0f}")
    if top >= bound:
        reasons.append(f"reached {top:,.0f} (bound {bound:,.0f})")
    return LagVerdict(
        name, first_max, last_max, top, margin, bound, ok=not reasons, reason="; ".join(reasons) or "ok"
    )


def rate_between(points: Series, start: float, end: float) -> float:
    """Average rate of a cumulative count between the first and the last sample in ``[start, end]``."""
    inside = [(t, v) for t, v in points if start <= t <= end]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return 0.0
    (ta, va), (tb, vb) = inside[0], inside[-1]
    return (vb - va) / (tb - ta)


class LogLine(NamedTuple):
    process: str
    number: int
    """1-based line number in the log."""
    text: str
    """The line (for a traceback: its first line and the exception it ends with)."""
    expected: str | None
    """The reason, when the line is one of ``EXPECTED_LOGS``."""


def scan_log(
    process: str, lines: Sequence[str], expected: Iterable[ExpectedLog] = EXPECTED_LOGS
) -> list[LogLine]:
    """Every error line and traceback in one process's log, each marked expected or not."""
    known = [(e, re.compile(e.pattern)) for e in expected if e.process in (process, "*")]
    out: list[LogLine] = []
    for index, line in enumerate(lines):
        if not ERROR_LINE.search(line):
            continue
        text = line.rstrip()
        if line.startswith("Traceback"):
            # The exception line is the first one after the indented frames.
            tail = next((x.rstrip() for x in lines[index + 1 :] if x.strip() and not x[0].isspace()), "")
            text = f"{text} ... {tail}"
        reason = next((e.reason for e, rx in known if rx.search(text)), None)
        out.append(LogLine(process, index + 1, text, reason))
    return out


class LossVerdict(NamedTuple):
    sent: int
    lost: int
    duplicates: int
    influx_missing: int | None
    """Distinct readings in Kafka that InfluxDB does not hold (``None`` when it was not counted)."""
    ok: bool
    reason: str


def loss_verdict(sent: int, lost: int, duplicates: int, influx_missing: int | None) -> LossVerdict:
    reasons = []
    if sent <= 0:
        reasons.append("nothing was sent")
    if lost:
        reasons.append(f"{lost:,} lost before Kafka")
    if influx_missing is None:
        reasons.append("InfluxDB was not counted")
    elif influx_missing:
        reasons.append(f"{influx_missing:,} not in InfluxDB")
    return LossVerdict(
        sent, lost, duplicates, influx_missing, ok=not reasons, reason="; ".join(reasons) or "ok"
    )


class LoadVerdict(NamedTuple):
    rate: float
    offered: float
    """What the load generator sent per second after the warm-up."""
    ok: bool
    reason: str


def load_verdict(rate: float, offered: float, share: float = OFFERED_SHARE) -> LoadVerdict:
    ok = offered >= share * rate
    reason = "ok" if ok else f"the load generator sent only {offered:,.0f} of {rate:,.0f} msg/s"
    return LoadVerdict(rate, offered, ok, reason)


def knee_rate(summary: Mapping[str, object], share: float) -> float | None:
    """``share`` of the whole pipeline's W2 knee in a pipeline summary: its lowest stage knee.

    ``None`` when the summary has no W2 or a stage failed its first step (no knee is known).
    """
    w2 = summary.get("W2")
    if not isinstance(w2, Mapping):
        return None
    knees: list[object] = [w2.get("knee"), *dict(w2.get("knees") or {}).values()]
    if any(k is None for k in knees):
        return None
    return share * min(float(str(k)) for k in knees)
