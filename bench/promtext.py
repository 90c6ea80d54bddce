"""Prometheus text exposition: parse a scrape, sum counters, pull out histogram buckets."""

from __future__ import annotations

import math
import re
import urllib.request
from typing import NamedTuple

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Sample(NamedTuple):
    name: str
    labels: dict[str, str]
    value: float


def parse(text: str) -> list[Sample]:
    """Every sample line of a scrape (comments, blank and unreadable lines are skipped)."""
    out: list[Sample] = []
    for row in text.splitlines():
        if not row or row.startswith("#"):
            continue
        match = _SAMPLE.match(row.strip())
        if match is None:
            continue
        name, labels, raw = match.groups()
        try:
            value = float(raw)
        except ValueError:
            continue
        out.append(Sample(name, dict(_LABEL.findall(labels or "")), value))
    return out


def total(samples: list[Sample], name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def buckets(samples: list[Sample], name: str, **labels: str) -> dict[float, float]:
    """Cumulative ``{upper bound: count}`` of histogram ``name`` (its ``_bucket`` samples)."""
    out: dict[float, float] = {}
    for s in samples:
        if s.name != f"{name}_bucket" or not all(s.labels.get(k) == v for k, v in labels.items()):
            continue
        le = s.labels.get("le", "")
        bound = math.inf if le == "+Inf" else float(le)
        out[bound] = out.get(bound, 0.0) + s.value
    return out


def scrape(port: int, host: str = "127.0.0.1", timeout_s: float = 3.0) -> list[Sample]:
    """One scrape of ``http://host:port/metrics``; raises ``OSError`` when it is not answering."""
    url = f"http://{host}:{port}/metrics"
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # a local http URL we built
        body: bytes = resp.read()
    return parse(body.decode("utf-8", errors="replace"))
