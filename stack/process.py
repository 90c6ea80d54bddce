"""Native daemons managed through pid files: start detached, probe, stop."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from citystream.errors import StackError

logger = logging.getLogger(__name__)


_SPAWNED: dict[int, subprocess.Popen[bytes]] = {}


class Daemon:
    """One native service process, its pid file and its log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        run_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        marker: str | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.run_dir = run_dir
        self.env = dict(env) if env is not None else None
        self.marker = marker or Path(argv[0]).name
        self.pid_path = run_dir / f"{name}.pid"
        self.log_path = run_dir / f"{name}.log"

    def pid(self) -> int | None:
        """The pid of the running process, or ``None`` (a stale pid file is ignored)."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        # A zombie (state Z) is not running; nor is a reused pid of another program. A process
        # started a moment ago may not have its command line yet: it counts as running.
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            return None
        if cmdline.strip() and self.marker not in cmdline:
            return None
        return pid

    def running(self) -> bool:
        return self.pid() is not None

    def start(self) -> bool:
        """Start the process detached; ``False`` when it was already running."""
        if self.running():
            return False
        self.run_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **(self.env or {})}
        with self.log_path.open("ab") as log:
            log.write(f"--- start {time.strftime('%Y-%m-%dT%H:%M:%S')} ---\n".encode())
            log.flush()
            proc = subprocess.Popen(  # noqa: S603  # argv built by the stack, no shell
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.run_dir,
                start_new_session=True,
            )
        _SPAWNED[proc.pid] = proc  # keep the handle: the child outlives this call
        self.pid_path.write_text(f"{proc.pid}\n")
        logger.info("started %s (pid %d), log %s", self.name, proc.pid, self.log_path)
        return True

    def signal(self, sig: int) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        return True

    def stop(self, timeout_s: float = 30.0) -> bool:
        """SIGTERM, then SIGKILL after ``timeout_s``; ``False`` when it was not running."""
        pid = self.pid()
        if pid is None:
            self.pid_path.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.pid() is not None:
            time.sleep(0.1)
        if self.pid() is not None:
            logger.warning("%s did not stop in %.0f s, killing it", self.name, timeout_s)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            while self.pid() is not None:
                time.sleep(0.05)
        self.pid_path.unlink(missing_ok=True)
        _reap(pid)
        return True

    def kill(self) -> bool:
        """SIGKILL at once (for fault-injection tests)."""
        pid = self.pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while self.pid() is not None:
            time.sleep(0.05)
        _reap(pid)
        return True

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def _reap(pid: int) -> None:
    """Collect the exit status of a child this process started (no zombie, no warning)."""
    proc = _SPAWNED.pop(pid, None)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, daemon: Daemon | None = None) -> None:
    """Poll ``check`` until it holds; raise with the daemon's log tail when it never does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if daemon is not None and not daemon.running():
            msg = f"{what}: process exited; last log lines:\n{daemon.log_tail()}"
            raise StackError(msg)
        time.sleep(0.25)
    tail = f"; last log lines:\n{daemon.log_tail()}" if daemon is not None else ""
    msg = f"{what}: not ready after {timeout_s:.0f} s{tail}"
    raise StackError(msg)


def run(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None, what: str
) -> str:
    """Run a build or install step; raise with its output when it fails."""
    logger.info("%s: %s", what, " ".join(argv))
    result = subprocess.run(  # noqa: S603  # argv built by the stack, no shell
        list(argv),
        env={**os.environ, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        out = (result.stdout + result.stderr)[-4000:]
        msg = f"{what} failed (exit {result.returncode}):\n{out}"
        raise StackError(msg)
    return result.stdout
