"""``python -m stream_jobs``: the same as ``citystream jobs``."""

from __future__ import annotations

import sys

from cli.main import main

if __name__ == "__main__":
    sys.exit(main(["jobs", *sys.argv[1:]]))
