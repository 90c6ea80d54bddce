"""Loss and duplicate accounting by (device, seq)."""

from __future__ import annotations

from bench.ledger import DUPLICATE, FIRST, UNEXPECTED, Ledger


def test_every_seq_once_is_complete() -> None:
    ledger = Ledger({"a": 3, "b": 2})
    for device, seq in (("a", 1), ("b", 1), ("a", 2), ("a", 3), ("b", 2)):
        assert ledger.tick(device, seq) == FIRST
    r = ledger.result()
    assert (r.expected, r.received, r.unique, r.duplicates, r.lost, r.unexpected) == (5, 5, 5, 0, 0, 0)
    assert r.lost_examples == []


def test_duplicates_lost_and_unexpected_are_told_apart() -> None:
    ledger = Ledger({"a": 4, "b": 2})
    outcomes = [ledger.tick(d, s) for d, s in (("a", 1), ("a", 1), ("a", 1), ("a", 3), ("b", 2))]
    assert outcomes == [FIRST, DUPLICATE, DUPLICATE, FIRST, FIRST]
    assert ledger.tick("probe", 1) == UNEXPECTED
    assert ledger.tick("a", 0) == UNEXPECTED
    assert ledger.tick("a", 5) == UNEXPECTED
    r = ledger.result()
    assert r.expected == 6
    assert r.received == 5
    assert r.duplicates == 2
    assert r.lost == 3  # a:2, a:4, b:1
    assert r.unique == 3
    assert r.unexpected == 3
    assert r.lost_devices == 2
    assert sorted(r.lost_examples) == [("a", 2), ("b", 1)]


def test_many_duplicates_of_one_seq_do_not_overflow() -> None:
    ledger = Ledger({"a": 1})
    for _ in range(600):
        ledger.tick("a", 1)
    r = ledger.result()
    assert (r.received, r.duplicates, r.lost) == (600, 599, 0)


def test_a_device_that_sent_nothing_loses_nothing() -> None:
    r = Ledger({"a": 0}).result()
    assert (r.expected, r.lost, r.lost_devices) == (0, 0, 0)
