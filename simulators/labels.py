"""Ground-truth labels: one JSON object per line and per injected incident (docs/contracts.md)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import msgspec

from citystream import codec


class Label(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    devices: list[str]
    """Empty for a district-wide event."""
    district: str
    sensor_type: str
    metric: str
    start_ms: int
    end_ms: int
    """Event times (epoch ms) of the devices; the incident covers ``start_ms <= ts < end_ms``."""
    expected_rule: str | None
    incident: str = ""
    """The incident's name in the scenario (one incident may give a label per district)."""


def encode_lines(labels: Iterable[Label]) -> bytes:
    return b"".join(codec.encode(label) + b"\n" for label in labels)


def write(path: Path, labels: Iterable[Label]) -> int:
    """Write the label file (replacing it); returns the number of labels."""
    items = list(labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_lines(items))
    return len(items)


def read(path: Path) -> list[Label]:
    return [codec.decode(line, Label) for line in path.read_bytes().splitlines() if line.strip()]
