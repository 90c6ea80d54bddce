"""`citystream stack up | down | status` against the real services."""

from __future__ import annotations

import subprocess
import sys

import pytest

from citystream.settings import Settings
from stack import manager
from stack.manager import Stack

pytestmark = pytest.mark.integration


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, check=False, timeout=600
    )


def test_second_up_changes_nothing(stack_settings: Settings) -> None:
    before = {s.name: s.pid for s in Stack(stack_settings).status()}
    _, changes = manager.up(stack_settings)
    after = {s.name: s.pid for s in Stack(stack_settings).status()}
    assert changes == []
    assert after == before
    assert all(after.values())


@pytest.mark.disruptive
def test_down_stops_everything_and_status_says_so(stack_settings: Settings) -> None:
    down = _cli("stack", "down")
    assert down.returncode == 0, down.stderr
    assert "mosquitto" in down.stdout
    assert "kafka" in down.stdout
    assert "influxdb" in down.stdout
    rows = Stack(stack_settings).status()
    assert [r.healthy for r in rows] == [False, False, False]
    assert all(r.pid is None for r in rows)
    status = _cli("stack", "status")
    assert status.returncode == 1
    assert status.stdout.count("DOWN") == 3
    up = _cli("stack", "up")
    assert up.returncode == 0, up.stderr
    assert "started mosquitto" in up.stdout
    assert "started kafka" in up.stdout
    assert all(r.healthy for r in Stack(stack_settings).status())
