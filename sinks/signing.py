"""Signed webhooks: how the sink signs a delivery and how a receiver verifies it.

Every POST carries:

- ``X-Citystream-Timestamp``: unix seconds when the attempt was signed;
- ``X-Citystream-Signature``: ``sha256=<hex HMAC-SHA256(secret, f"{timestamp}." + body)>``;
- ``X-Citystream-Event-Id``: the alert event's id (the same on every retry).

A receiver checks the signature in constant time, refuses timestamps outside a tolerance and
event ids it has already accepted (:class:`Verifier`); together these stop replays. Answer a
2xx for an event id you already processed, so the sink does not keep retrying it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Mapping

from citystream.errors import CitystreamError

TIMESTAMP_HEADER = "X-Citystream-Timestamp"
SIGNATURE_HEADER = "X-Citystream-Signature"
EVENT_ID_HEADER = "X-Citystream-Event-Id"
SCHEME = "sha256="


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def signature(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """``sha256=<hex>`` over ``f"{timestamp}."`` followed by the body."""
    digest = hmac.new(_key(secret), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return SCHEME + digest


def signed_headers(
    secret: str | bytes, body: bytes, event_id: str, now: float | None = None
) -> dict[str, str]:
    timestamp = int(time.time() if now is None else now)
    return {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
        EVENT_ID_HEADER: event_id,
    }


class SignatureError(CitystreamError):
    """A delivery that must not be trusted; ``reason`` is ``missing``, ``malformed``, ``bad_signature``,
    ``stale`` or ``replayed``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, v in headers.items():
        if key.lower() == lowered:
            return v
    return None


class Verifier:
    """Checks deliveries for one secret and remembers accepted event ids within the tolerance."""

    def __init__(
        self, secret: str | bytes, tolerance_s: float = 300.0, max_remembered: int = 100_000
    ) -> None:
        self._secret = _key(secret)
        self.tolerance_s = tolerance_s
        self.max_remembered = max_remembered
        self._seen: OrderedDict[str, float] = OrderedDict()

    @property
    def remembered(self) -> int:
        """How many accepted event ids are kept (at most ``max_remembered``)."""
        return len(self._seen)

    def verify(self, headers: Mapping[str, str], body: bytes, now: float | None = None) -> str:
        """The event id of a genuine, fresh, first delivery; raises :class:`SignatureError` otherwise."""
        now = time.time() if now is None else now
        raw_ts = _header(headers, TIMESTAMP_HEADER)
        sig = _header(headers, SIGNATURE_HEADER)
        event_id = _header(headers, EVENT_ID_HEADER)
        if raw_ts is None or sig is None or event_id is None:
            raise SignatureError("missing", "timestamp, signature and event id headers are required")
        try:
            timestamp = int(raw_ts)
        except ValueError:
            raise SignatureError("malformed", f"timestamp {raw_ts[:40]!r} is not an integer") from None
        expected = signature(self._secret, timestamp, body)
        if not hmac.compare_digest(expected.encode(), sig.strip().encode()):
            raise SignatureError("bad_signature", "the signature does not match the body and timestamp")
        if abs(now - timestamp) > self.tolerance_s:
            raise SignatureError("stale", f"timestamp is {now - timestamp:.0f} s away from now")
        self._forget_older_than(now - self.tolerance_s)
        if event_id in self._seen:
            raise SignatureError("replayed", f"event {event_id} was already delivered")
        self._seen[event_id] = float(timestamp)
        while len(self._seen) > self.max_remembered:
            self._seen.popitem(last=False)
        return event_id

    def _forget_older_than(self, cutoff: float) -> None:
        # Ids older than the tolerance are refused as stale anyway.
        while self._seen:
            event_id, ts = next(iter(self._seen.items()))
            if ts >= cutoff:
                break
            del self._seen[event_id]
