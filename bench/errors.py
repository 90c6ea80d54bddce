"""The benchmark's errors (under the project's one exception root)."""

from __future__ import annotations

from citystream.errors import CitystreamError


class BenchError(CitystreamError):
    """A benchmark could not be set up or run (a process died, a tool is missing, a timeout)."""
