"""``python -m sinks influx|webhook|api|rollups``: the same as ``citystream sink ...``."""

from __future__ import annotations

import sys

from cli.main import main

if __name__ == "__main__":
    sys.exit(main(["sink", *sys.argv[1:]]))
