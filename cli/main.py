"""The ``citystream`` command: one entry point whose subcommands call into the stages."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from citystream.errors import CitystreamError
from citystream.logs import configure_logging
from citystream.settings import Settings, get_settings

logger = logging.getLogger("citystream")

Handler = Callable[[argparse.Namespace], int]


def _stack_up(_: argparse.Namespace) -> int:
    import time

    from stack import manager

    t0 = time.monotonic()
    settings, changes = manager.up(get_settings())
    for change in changes:
        print(f"  {change}")
    print(f"stack up in {time.monotonic() - t0:.1f} s" + ("" if changes else " (no changes)"))
    return _print_status(settings)


def _stack_init(_: argparse.Namespace) -> int:
    from stack import manager

    _settings, changes = manager.init_external(get_settings())
    for change in changes:
        print(f"  {change}")
    print("initialised" + ("" if changes else " (no changes)"))
    return 0


def _stack_down(_: argparse.Namespace) -> int:
    from stack import manager

    stopped = manager.down(get_settings())
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def _stack_status(_: argparse.Namespace) -> int:
    return _print_status(get_settings())


def _print_status(settings: Settings) -> int:
    from stack.manager import Stack

    rows = Stack(settings).status()
    print(f"{'service':<10} {'version':<12} {'port':>5}  {'pid':>7}  health")
    for r in rows:
        pid = str(r.pid) if r.pid else "-"
        health = "up" if r.healthy else "DOWN"
        print(f"{r.name:<10} {r.version:<12} {r.port:>5}  {pid:>7}  {health}")
    return 0 if all(r.healthy for r in rows) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="citystream",
        description="Event-streaming backbone of a smart city (MQTT -> Kafka -> Faust -> InfluxDB).",
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default: settings)")
    sub = parser.add_subparsers(dest="command", required=True)

    stack = sub.add_parser("stack", help="local Mosquitto, Kafka and InfluxDB as native processes")
    stack_sub = stack.add_subparsers(dest="action", required=True)
    stack_sub.add_parser("up", help="install, start and set up what is missing (idempotent)").set_defaults(
        func=_stack_up
    )
    stack_sub.add_parser(
        "init", help="set up services that run elsewhere (compose): secrets, auth files, topics, buckets"
    ).set_defaults(func=_stack_init)
    stack_sub.add_parser("down", help="stop every service").set_defaults(func=_stack_down)
    stack_sub.add_parser(
        "status", help="version, port and health; non-zero exit if any is down"
    ).set_defaults(func=_stack_status)

    from cli.stages import registered

    for register in registered():
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level or get_settings().log_level)
    func: Handler = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130
    except CitystreamError as exc:
        logger.error("%s", exc)  # noqa: TRY400  # a clear message, not a traceback
        return 2


if __name__ == "__main__":
    sys.exit(main())
