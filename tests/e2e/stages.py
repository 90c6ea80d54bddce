"""The pipeline's processes for end-to-end tests: the simulator, the InfluxDB sink and the pipeline
monitor as subprocesses with a test's settings (topics, MQTT root, buckets, consumer groups).

The bridge and the stream jobs have their own helpers (``tests.integration.ingest_support``,
``tests.jobs_worker``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from citystream.settings import Settings
from tests.integration.ingest_support import REPO, free_port


def simulate(settings: Settings, scenario: str, *options: str, timeout_s: float = 600) -> None:
    """``citystream simulate --scenario SCENARIO OPTIONS`` on the test's topics and MQTT root;
    the retained status messages are deleted at the end (the topic root is thrown away)."""
    env = {
        **os.environ,
        "CITYSTREAM_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "CITYSTREAM_MQTT__TOPIC_ROOT": settings.mqtt.topic_root,
    }
    command = ["cli.main", "simulate", "--scenario", scenario, "--no-progress", "--clear-status", *options]
    subprocess.run([sys.executable, "-m", *command], cwd=REPO, env=env, check=True, timeout=timeout_s)


class StageProcess:
    """``python -m MODULE ARGS`` with extra environment variables, its output in a log file."""

    def __init__(self, name: str, command: Sequence[str], env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.command = [sys.executable, "-m", *command]
        self.env = {**os.environ, "CITYSTREAM_LOG_LEVEL": "INFO", **env}
        self.log = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.command, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def influx_sink(settings: Settings, log_dir: Path) -> tuple[StageProcess, int]:
    """``citystream sink influx`` on the test's topics and buckets (operator token, own group),
    and the port of its ``/metrics``."""
    port = free_port()
    env = {
        "CITYSTREAM_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "CITYSTREAM_INFLUX__BUCKET_RAW": settings.influx.bucket_raw,
        "CITYSTREAM_INFLUX__BUCKET_AGG": settings.influx.bucket_agg,
        "CITYSTREAM_SINK__INFLUX_GROUP": settings.sink.influx_group,
        "CITYSTREAM_SINK__INFLUX_TOKEN": settings.influx.admin_token.get_secret_value(),
        "CITYSTREAM_SINK__INFLUX_METRICS_PORT": str(port),
        "CITYSTREAM_SINK__FLUSH_INTERVAL_S": "0.2",
    }
    return StageProcess("sink-influx", ["sinks", "influx"], env, log_dir), port


def monitor(
    settings: Settings, targets: Mapping[str, str], groups: Sequence[str], log_dir: Path, interval_s: float
) -> StageProcess:
    """``citystream monitor`` writing ``pipeline`` points to the test's aggregate bucket, scraping
    ``targets`` (instance -> ``/metrics`` URL) and the lag of the consumer ``groups``."""
    env = {
        "CITYSTREAM_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "CITYSTREAM_INFLUX__BUCKET_AGG": settings.influx.bucket_agg,
        "CITYSTREAM_MONITOR__TARGETS": json.dumps(dict(targets)),
        "CITYSTREAM_MONITOR__CONSUMER_GROUPS": json.dumps(list(groups)),
        "CITYSTREAM_MONITOR__WRITE_TOKEN": settings.influx.admin_token.get_secret_value(),
    }
    return StageProcess("monitor", ["sinks.monitor", "--interval", str(interval_s)], env, log_dir)
