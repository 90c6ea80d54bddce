"""The InfluxDB writer's error handling, against a fake write API (no I/O)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from influxdb_client.rest import ApiException
from prometheus_client import CollectorRegistry

from sinks.influx import (
    MAX_REQUEST_BYTES,
    BatchTooLargeError,
    InfluxWriter,
    PointsRejectedError,
    WriteFailedError,
    chunks,
    classify,
)
from sinks.metrics import InfluxSinkMetrics
from sinks.retry import Backoff


class Response:
    """What influxdb-client's async REST layer hands to ApiException."""

    def __init__(self, status: int, body: str = "", headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.reason = "reason"
        self.data = body
        self._headers = headers or {}

    def getheaders(self) -> dict[str, str]:
        return self._headers

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self._headers.get(name, default)


def api_error(status: int, body: str = "", headers: dict[str, str] | None = None) -> ApiException:
    return ApiException(http_resp=Response(status, body, headers))


class FakeWriteApi:
    """Fails the first ``failures`` calls, then rejects any request holding a line with BAD."""

    def __init__(self, failures: list[BaseException] | None = None, max_lines: int | None = None) -> None:
        self.failures = list(failures or [])
        self.max_lines = max_lines
        self.calls: list[list[str]] = []
        self.stored: set[str] = set()

    async def write(self, *, bucket: str, org: str, record: str, write_precision: Any) -> bool:
        lines = record.split("\n")
        self.calls.append(lines)
        if self.failures:
            raise self.failures.pop(0)
        if self.max_lines is not None and len(lines) > self.max_lines:
            raise api_error(413, '{"message": "request too large"}')
        if any("BAD" in x for x in lines):
            raise api_error(400, '{"code": "invalid", "message": "unable to parse BAD"}')
        self.stored.update(lines)
        return True


def writer(api: FakeWriteApi, sleeps: list[float]) -> InfluxWriter:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    backoff = Backoff(initial_s=0.1, max_s=1.0, retry_after_max_s=30.0, jitter=False)
    return InfluxWriter(api, "org", backoff, InfluxSinkMetrics(CollectorRegistry()), sleep=sleep)  # type: ignore[arg-type]  # a fake


def test_classify() -> None:
    assert isinstance(classify(api_error(400, '{"message": "unable to parse"}')), PointsRejectedError)
    assert isinstance(classify(api_error(422, '{"message": "partial write"}')), PointsRejectedError)
    assert isinstance(classify(api_error(413)), BatchTooLargeError)
    busy = classify(api_error(429, headers={"Retry-After": "7"}))
    assert isinstance(busy, WriteFailedError)
    assert busy.retriable
    assert busy.retry_after == 7.0
    assert classify(api_error(503)).retriable
    assert classify(api_error(401)).retriable  # a token to fix, not data to drop
    assert classify(aiohttp.ClientConnectionError("refused")).retriable
    assert classify(TimeoutError()).retriable
    with pytest.raises(KeyError):
        classify(KeyError("a bug is not a write failure"))


async def test_retriable_errors_are_retried_with_backoff_and_retry_after() -> None:
    api = FakeWriteApi([api_error(503), api_error(429, headers={"Retry-After": "5"}), OSError("reset")])
    sleeps: list[float] = []
    w = writer(api, sleeps)
    assert await w.write("city", ["a", "b"]) == []
    assert sleeps == [0.1, 5.0, 0.4]
    assert api.stored == {"a", "b"}
    assert not w.failing


async def test_rejected_points_are_isolated_and_good_ones_written() -> None:
    api = FakeWriteApi()
    lines = [f"ok{i}" for i in range(10)]
    lines[3] = "BAD3"
    lines[8] = "BAD8"
    sleeps: list[float] = []
    rejected = await writer(api, sleeps).write("city", lines)
    assert [i for i, _ in rejected] == [3, 8]
    assert all("HTTP 400" in reason and "unable to parse" in reason for _, reason in rejected)
    assert api.stored == {x for x in lines if not x.startswith("BAD")}
    assert sleeps == []
    assert len(api.calls) < 2 * len(lines)  # halving, not one request per line


async def test_too_large_batches_are_split() -> None:
    api = FakeWriteApi(max_lines=3)
    lines = [f"p{i}" for i in range(10)]
    assert await writer(api, []).write("city", lines) == []
    assert api.stored == set(lines)


def test_chunks_keep_each_request_under_the_byte_limit() -> None:
    lines = ["x" * 99] * 25 + ["é" * 60] + ["y" * 99] * 5  # 100 bytes each with the newline; é is 2
    ranges = chunks(lines, max_bytes=1000)
    assert ranges[0] == (0, 10)
    assert [lo for lo, _ in ranges] == sorted(lo for lo, _ in ranges)
    assert ranges[-1][1] == len(lines)
    assert all(hi > lo for lo, hi in ranges)
    for lo, hi in ranges:
        assert len("\n".join(lines[lo:hi]).encode()) <= 1000
    assert chunks([]) == []
    assert chunks(["z" * 5000], max_bytes=1000) == [(0, 1)]  # a single long line still goes


async def test_a_batch_is_written_in_requests_under_the_limit() -> None:
    api = FakeWriteApi()
    lines = [f"m,t=x v={i}i {i}" for i in range(600_000)]
    assert await writer(api, []).write("city", lines) == []
    assert len(api.calls) > 1
    assert all(len("\n".join(c).encode()) <= MAX_REQUEST_BYTES for c in api.calls)
    assert api.stored == set(lines)
