"""Start-up helper for the stack's daemons.

Right after ``Popen`` returns, ``/proc/<pid>/cmdline`` of the new process can still be empty
for a moment (the kernel is finishing the exec), so ``Daemon.running()`` would say "not
running" and a start-up wait would report a healthy process as exited.
"""

from __future__ import annotations

import time

from stack.process import Daemon


def wait_exec(daemon: Daemon, timeout_s: float = 5.0) -> None:
    """Wait until a just-started daemon is visible as running (or ``timeout_s`` passed)."""
    deadline = time.monotonic() + timeout_s
    while not daemon.running() and time.monotonic() < deadline:
        time.sleep(0.02)
