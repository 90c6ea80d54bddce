"""The stream jobs worker (``python -m stream_jobs``) as a subprocess with a test's settings."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from citystream.settings import Settings

REPO = Path(__file__).resolve().parents[1]


class JobsWorker:
    def __init__(self, settings: Settings, log: Path, **jobs: str) -> None:
        """``jobs``: extra ``jobs`` settings, e.g. ``grace_s="20"``."""
        self.env = {
            **os.environ,
            "CITYSTREAM_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
            "CITYSTREAM_KAFKA__BOOTSTRAP": settings.kafka.bootstrap,
            # Tests run several workers at once: no /metrics unless a test asks for a port.
            "CITYSTREAM_JOBS__METRICS_PORT": "0",
            **{f"CITYSTREAM_JOBS__{k.upper()}": v for k, v in jobs.items()},
        }
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        app_id = jobs.get("app_id", settings.jobs.app_id)
        self.datadir = settings.stack.state_dir / "jobs" / f"{settings.kafka.topic_prefix}{app_id}"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stream_jobs"],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final commit."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 20 s), then remove the worker's data folder."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.datadir, ignore_errors=True)

    def tail(self, chars: int = 5000) -> str:
        return self.log.read_text()[-chars:] if self.log.exists() else ""
