"""Find configured secrets where they must never be: logs, metrics, dead letters, errors.

``configured_secrets`` collects every secret value a run knows: each ``SecretStr`` of the
settings (webhook subscribers included), every value of the ``secrets.env`` files given, and
extra ones (device passwords a test made). ``scan_text`` and ``scan_paths`` look for each of
them, also URL-encoded and JSON-escaped, and report where, naming the secret, never showing it.

Files that are meant to hold secrets (``secrets.env``, ``server.properties`` with the brokers'
JAAS passwords, key files) are not logs: pass the log files, DLQ dumps and metrics texts only
(``log_files`` lists the ``*.log`` files under a state directory).
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, SecretStr

from stack.secrets import read_env_file

MIN_LENGTH = 8
"""Shorter values would match by chance; generated secrets are 32+ characters."""


class Finding(NamedTuple):
    where: str
    """File path (or the label of a text) and line number."""
    secret: str
    """Name of the secret (setting, variable or label), never its value."""
    form: str
    """``raw``, ``url`` or ``json``: how it was written."""


def _walk(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, SecretStr):
        yield path, value.get_secret_value()
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _walk(getattr(value, name), f"{path}.{name}" if path else name)
    elif isinstance(value, tuple | list):
        for i, item in enumerate(value):
            yield from _walk(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, f"{path}[{key}]")


def configured_secrets(
    settings: BaseModel | None = None,
    *,
    env_files: Iterable[Path] = (),
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Secret name -> value, for every non-trivial secret the run is configured with."""
    found: dict[str, str] = {}
    if settings is not None:
        found.update(_walk(settings, ""))
    for path in env_files:
        for key, value in read_env_file(path).items():
            found[f"{path.name}:{key}"] = value
    found.update(extra or {})
    return {name: value for name, value in found.items() if len(value) >= MIN_LENGTH}


def variants(secret: str) -> dict[str, str]:
    """The forms a secret may take in text: as is, URL-encoded, JSON-escaped."""
    forms = {"raw": secret}
    for form, text in (("url", urllib.parse.quote(secret, safe="")), ("json", json.dumps(secret)[1:-1])):
        if text != secret:
            forms[form] = text
    return forms


def scan_text(text: str, secrets: Mapping[str, str], label: str = "text") -> list[Finding]:
    findings = []
    needles = [
        (name, form, needle) for name, value in secrets.items() for form, needle in variants(value).items()
    ]
    for lineno, line in enumerate(text.splitlines(), 1):
        for name, form, needle in needles:
            if needle in line:
                findings.append(Finding(f"{label}:{lineno}", name, form))
    return findings


def scan_paths(paths: Iterable[Path], secrets: Mapping[str, str]) -> list[Finding]:
    """Scan files (directories: every file below them) for the secrets."""
    findings: list[Finding] = []
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            try:
                text = f.read_bytes().decode("utf-8", errors="replace")
            except FileNotFoundError:  # rotated or deleted while scanning
                continue
            findings += scan_text(text, secrets, str(f))
    return findings


DATA_DIRS = frozenset({"data", "engine"})
"""Kafka's log segments (``*.log`` too) and InfluxDB's storage: data, not service logs."""


def log_files(state_dir: Path) -> list[Path]:
    """The services' log files under a stack state directory (data directories skipped)."""
    found = []
    for root, dirs, files in os.walk(state_dir):  # os.walk ignores directories that vanish
        dirs[:] = [d for d in dirs if d not in DATA_DIRS]
        found += [Path(root) / f for f in files if f.endswith(".log")]
    return sorted(found)


async def scan_topic(
    kafka_kwargs: dict[str, Any], topic: str, secrets: Mapping[str, str], timeout_s: float = 10.0
) -> list[Finding]:
    """Read a topic (a dead-letter topic, say) from the beginning and scan every record's key,
    value and headers. ``kafka_kwargs`` are aiokafka client arguments (``client_kwargs``)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**kafka_kwargs, enable_auto_commit=False)
    findings: list[Finding] = []
    try:
        await consumer.start()
        await consumer.topics()  # refreshes the metadata of every topic
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return findings
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline and await _behind(consumer, ends):
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batch.values():
                for r in records:
                    parts = [r.key or b"", r.value or b"", *(v for _, v in r.headers)]
                    text = b"\n".join(parts).decode("utf-8", errors="replace")
                    label = f"{topic}/{r.partition}@{r.offset}"
                    findings += [f._replace(where=label) for f in scan_text(text, secrets, label)]
    finally:
        await consumer.stop()
    return findings


async def _behind(consumer: Any, ends: Mapping[Any, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return True
    return False
