"""Subcommands that call into the pipeline stages.

Each stage that has commands exposes ``<stage>.cli.register(subparsers)``; they are found
here so the entry point stays one line per stage.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Iterator

SubParsers = argparse._SubParsersAction  # argparse has no public name for it
Register = Callable[["SubParsers[argparse.ArgumentParser]"], None]

STAGE_CLIS = (
    "cli.config",
    "ingest.cli",
    "simulators.cli",
    "stream_jobs.cli",
    "sinks.cli",
    "sinks.monitor",
    "dashboards.cli",
    "bench.cli",
    "cli.demo",
)


def registered_names() -> set[str]:
    """The top-level subcommands the installed stages provide."""
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    for register in registered():
        register(sub)
    return set(sub.choices)


def registered() -> Iterator[Register]:
    for name in STAGE_CLIS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        register: Register = module.register
        yield register
