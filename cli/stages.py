"""Subcommands that call into the pipeline stages; each stage registers its own parser."""

from __future__ import annotations

import argparse
from collections.abc import Callable

SubParsers = argparse._SubParsersAction  # argparse has no public name for it

REGISTRY: list[Callable[[SubParsers[argparse.ArgumentParser]], None]] = []
