"""Backoff with jitter and Retry-After; webhook signatures and replay protection."""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import random

import pytest

from sinks.retry import Backoff, parse_retry_after
from sinks.signing import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    Verifier,
    signature,
    signed_headers,
)


def test_backoff_doubles_up_to_the_cap() -> None:
    b = Backoff(initial_s=0.5, max_s=4.0, jitter=False)
    assert [b.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_full_jitter_stays_between_zero_and_the_ceiling() -> None:
    b = Backoff(initial_s=1.0, max_s=8.0)
    rand = random.Random(7)
    delays = [b.delay(3, rand=rand) for _ in range(500)]
    assert all(0.0 <= d <= 4.0 for d in delays)
    assert max(delays) - min(delays) > 2.0  # actually spread


def test_retry_after_wins_but_is_bounded() -> None:
    b = Backoff(initial_s=0.1, max_s=1.0, retry_after_max_s=30.0, jitter=False)
    assert b.delay(1, retry_after=7.0) == 7.0
    assert b.delay(1, retry_after=3600.0) == 30.0
    assert b.delay(5, retry_after=0.0) == 1.0


def test_parse_retry_after() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after("-3") == 0.0
    date = email.utils.formatdate(1_000_030.0, usegmt=True)
    assert parse_retry_after(date, now=1_000_000.0) == pytest.approx(30.0)
    assert parse_retry_after("soon") is None


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"event_id":"e1"}'
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature("k", 1_700_000_000, body) == f"sha256={expected}"
    headers = signed_headers("k", body, "e1", now=1_700_000_000.9)
    assert headers == {
        TIMESTAMP_HEADER: "1700000000",
        SIGNATURE_HEADER: f"sha256={expected}",
        EVENT_ID_HEADER: "e1",
    }


def _reason(verifier: Verifier, headers: dict[str, str], body: bytes, now: float) -> str:
    with pytest.raises(SignatureError) as err:
        verifier.verify(headers, body, now=now)
    return err.value.reason


def test_verifier_accepts_once_and_refuses_replays_tampering_and_stale() -> None:
    now = 1_700_000_000.0
    body = b'{"a":1}'
    verifier = Verifier("secret", tolerance_s=300)
    headers = signed_headers("secret", body, "evt-1", now=now)
    # Header names are case-insensitive, as in HTTP.
    assert verifier.verify({k.lower(): v for k, v in headers.items()}, body, now=now + 1) == "evt-1"
    assert _reason(verifier, headers, body, now + 2) == "replayed"
    other = signed_headers("secret", body, "evt-2", now=now)
    assert _reason(verifier, other, b'{"a":2}', now) == "bad_signature"
    assert _reason(verifier, signed_headers("wrong", body, "evt-3", now=now), body, now) == "bad_signature"
    assert _reason(verifier, signed_headers("secret", body, "evt-4", now=now - 301), body, now) == "stale"
    assert _reason(
        verifier, {TIMESTAMP_HEADER: "x", SIGNATURE_HEADER: "y", EVENT_ID_HEADER: "z"}, body, now
    ) == ("malformed")
    assert _reason(verifier, {}, body, now) == "missing"
    # A retry of a failed delivery carries a fresh timestamp and the same id: accepted once.
    assert (
        verifier.verify(signed_headers("secret", body, "evt-2", now=now + 60), body, now=now + 60) == "evt-2"
    )


def test_verifier_memory_is_bounded() -> None:
    verifier = Verifier("s", tolerance_s=10, max_remembered=3)
    for i in range(10):
        verifier.verify(signed_headers("s", b"x", f"e{i}", now=1000.0 + i), b"x", now=1000.0 + i)
    assert verifier.remembered == 3
