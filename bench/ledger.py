"""Loss and duplicates, counted by (device, seq).

The load generator says how many messages it sent per device; device ``d`` sent seqs
``1..n[d]`` (it numbers each device's messages from 1 without gaps). Reading a topic back,
every ``(device, seq)`` is ticked off: a second tick is a duplicate, a seq outside ``1..n`` or
an unknown device is *unexpected* (for example the readiness probe), and every seq never
ticked is lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

MAX_EXAMPLES = 10
FIRST, DUPLICATE, UNEXPECTED = 1, 0, -1


class LedgerResult(NamedTuple):
    expected: int
    received: int
    """Records read back for known devices and seqs, duplicates included."""
    unique: int
    duplicates: int
    lost: int
    unexpected: int
    lost_devices: int
    lost_examples: list[tuple[str, int]]
    """A few (device, seq) that never arrived."""

    def as_dict(self) -> dict[str, object]:
        return {**self._asdict(), "lost_examples": [list(x) for x in self.lost_examples]}


class Ledger:
    def __init__(self, sent: Mapping[str, int]) -> None:
        self.sent = dict(sent)
        self._seen: dict[str, bytearray] = {d: bytearray(n + 1) for d, n in self.sent.items()}
        self.received = 0
        self.duplicates = 0
        self.unexpected = 0

    def tick(self, device: str, seq: int) -> int:
        """Count one record: ``FIRST``, ``DUPLICATE`` or ``UNEXPECTED``."""
        seen = self._seen.get(device)
        if seen is None or not 0 < seq < len(seen):
            self.unexpected += 1
            return UNEXPECTED
        self.received += 1
        if seen[seq]:
            self.duplicates += 1
            if seen[seq] < 255:
                seen[seq] += 1
            return DUPLICATE
        seen[seq] = 1
        return FIRST

    def result(self) -> LedgerResult:
        expected = sum(self.sent.values())
        lost = 0
        lost_devices = 0
        examples: list[tuple[str, int]] = []
        for device, seen in self._seen.items():
            missing = seen.count(0) - 1  # index 0 is never a seq
            if missing:
                lost += missing
                lost_devices += 1
                if len(examples) < MAX_EXAMPLES:
                    examples.append((device, seen.index(0, 1)))
        return LedgerResult(
            expected=expected,
            received=self.received,
            unique=expected - lost,
            duplicates=self.duplicates,
            lost=lost,
            unexpected=self.unexpected,
            lost_devices=lost_devices,
            lost_examples=examples,
        )
