"""``python -m ingest``: the bridge (same as ``citystream ingest``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from citystream.errors import CitystreamError
from citystream.logs import configure_logging
from citystream.settings import get_settings
from ingest.cli import add_bridge_arguments, bridge_settings
from ingest.service import run_bridge


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingest", description="the MQTT to Kafka bridge")
    add_bridge_arguments(parser)
    args = parser.parse_args(argv)
    settings = bridge_settings(args, get_settings())
    configure_logging(settings.log_level)
    try:
        return asyncio.run(run_bridge(settings))
    except CitystreamError as exc:
        logging.getLogger("ingest").error("%s", exc)  # noqa: TRY400  # a clear message, not a traceback
        return 2


if __name__ == "__main__":
    sys.exit(main())
