"""``citystream sink ...``: the InfluxDB sink, the webhook sink, the alert API, the rollup task."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from citystream.errors import ConfigError
from citystream.settings import Settings, WebhookSubscriber, get_settings

if TYPE_CHECKING:
    from cli.stages import SubParsers


def register(sub: SubParsers[argparse.ArgumentParser]) -> None:
    sink = sub.add_parser("sink", help="write to InfluxDB, deliver signed webhooks, serve the alert API")
    actions = sink.add_subparsers(dest="action", required=True)

    influx = actions.add_parser(
        "influx", help="telemetry, aggregates, alerts and quality from Kafka into InfluxDB (at least once)"
    )
    influx.set_defaults(func=_influx)

    webhook = actions.add_parser(
        "webhook", help="deliver alert events to signed webhooks, and serve the alert API"
    )
    webhook.add_argument(
        "--subscribers",
        type=Path,
        help="YAML list of subscribers (name, url, secret, severities, districts, rules)",
    )
    webhook.add_argument("--no-api", action="store_true", help="do not serve the acknowledgement API")
    webhook.set_defaults(func=_webhook)

    api = actions.add_parser("api", help="only the acknowledgement API (POST /alerts/{key}/ack, /silences)")
    api.set_defaults(func=_api)

    rollups = actions.add_parser("rollups", help="install or update the InfluxDB task that writes agg_1h")
    rollups.add_argument("--run-now", action="store_true", help="also run it once now and wait for it")
    rollups.add_argument("--delete", action="store_true", help="remove the task instead")
    rollups.set_defaults(func=_rollups)


def load_subscribers(path: Path) -> tuple[WebhookSubscriber, ...]:
    import yaml
    from pydantic import ValidationError

    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read subscribers from {path}: {exc}") from exc
    if not isinstance(raw, list):
        raise ConfigError(f"{path} must hold a list of subscribers")
    try:
        return tuple(WebhookSubscriber.model_validate(item) for item in raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid subscriber in {path}: {exc}") from exc


async def _until_signal(main: Callable[[], Awaitable[object]], stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    await main()


def _influx(_: argparse.Namespace) -> int:
    from sinks.influx import InfluxSink

    sink = InfluxSink(get_settings())
    asyncio.run(_until_signal(sink.run, sink.stop))
    return 0


def _webhook(args: argparse.Namespace) -> int:
    settings = get_settings()
    subscribers = load_subscribers(args.subscribers) if args.subscribers else None
    asyncio.run(_serve_webhook(settings, subscribers, with_api=not args.no_api))
    return 0


async def _serve_webhook(
    settings: Settings, subscribers: tuple[WebhookSubscriber, ...] | None, *, with_api: bool
) -> None:
    import logging

    from sinks.api import AlertApi
    from sinks.webhook import WebhookSink

    sink = WebhookSink(settings, subscribers=subscribers)
    api = None
    if with_api:
        if settings.sink.api_token.get_secret_value():
            api = AlertApi(settings)
        else:
            logging.getLogger(__name__).warning("no CITYSTREAM_SINK__API_TOKEN: the alert API is not served")
    if api is not None:
        await api.start()
    try:
        await _until_signal(sink.run, sink.stop)
    finally:
        if api is not None:
            await api.stop()


def _api(_: argparse.Namespace) -> int:
    from sinks.api import AlertApi

    api = AlertApi(get_settings())

    async def serve() -> None:
        stop = asyncio.Event()
        await api.start()
        try:
            await _until_signal(stop.wait, stop.set)
        finally:
            await api.stop()

    asyncio.run(serve())
    return 0


def _rollups(args: argparse.Namespace) -> int:
    from sinks import rollup

    settings = get_settings()
    if args.delete:
        print(f"deleted {rollup.delete_task(settings)} rollup task(s)")
        return 0
    task = rollup.ensure_task(settings)
    print(f"rollup task {task.id} ({task.name}) every {settings.sink.rollup_every}")
    if args.run_now:
        print(f"run: {rollup.run_now(settings, task)}")
    return 0
