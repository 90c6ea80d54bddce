"""Deduplication of readings by (device, seq): pure, one small state value per device.

Kafka delivers at least once and devices resend after a lost acknowledgement, so the same
reading can arrive more than once. A device's state is its highest accepted ``seq`` and a
bitmap of which of the ``window`` sequence numbers just below it were accepted, so readings
that arrive out of order are still accepted once and repeats are refused.

A ``seq`` more than ``window`` below the highest one cannot be told apart from a repeat any
more; it is taken as a device that restarted its counter (``RESET``): the reading is accepted
and the state starts again from it.
"""

from __future__ import annotations

import enum

import msgspec

MAX_WINDOW = 64


class Verdict(enum.Enum):
    NEW = "new"
    """First time this seq is seen, at or above the highest one."""
    LATE_NEW = "late_new"
    """First time this seq is seen, below the highest one (out-of-order delivery)."""
    DUPLICATE = "duplicate"
    RESET = "reset"
    """Far below the highest seq: the device restarted its counter; accepted."""

    @property
    def accepted(self) -> bool:
        return self is not Verdict.DUPLICATE


class DedupState(msgspec.Struct, frozen=True, array_like=True):
    high: int = -1
    """The highest accepted seq (-1 before the first reading)."""
    below: int = 0
    """Bit ``i`` set: seq ``high - 1 - i`` was accepted."""


def accept(state: DedupState, seq: int, window: int = MAX_WINDOW) -> tuple[Verdict, DedupState]:
    """Whether ``seq`` is new for this device, and the state after it."""
    mask = (1 << min(window, MAX_WINDOW)) - 1
    high = state.high
    if high < 0:
        return Verdict.NEW, DedupState(seq, 0)
    if seq > high:
        shift = seq - high
        below = ((state.below << shift) | (1 << (shift - 1))) & mask if shift <= MAX_WINDOW else 0
        return Verdict.NEW, DedupState(seq, below)
    if seq == high:
        return Verdict.DUPLICATE, state
    distance = high - seq - 1
    if distance >= min(window, MAX_WINDOW):
        return Verdict.RESET, DedupState(seq, 0)
    bit = 1 << distance
    if state.below & bit:
        return Verdict.DUPLICATE, state
    return Verdict.LATE_NEW, DedupState(high, state.below | bit)
