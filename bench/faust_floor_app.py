"""Faust on its own, for ``bench/jobs.py`` (not part of the pipeline): the floor under the
stream jobs' cost per reading.

One agent over telemetry.raw takes batches the way the ``readings`` agent does
(``take_events``), decodes each record into a Reading and does nothing else; Faust
acknowledges and commits as usual. What this process spends per reading is what Faust and its
Kafka client spend before any work of the jobs: no dedup, windows, detectors, state or sends.

    python bench/faust_floor_app.py --bootstrap 127.0.0.1:9092 --topic T --group G
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import faust

from citystream import codec
from citystream.model import Reading


def create_app(bootstrap: str, topic: str, group: str, datadir: str) -> faust.App:
    app = faust.App(
        group,
        broker=";".join(f"kafka://{b}" for b in bootstrap.split(",")),
        store="memory://",
        datadir=datadir,
        web_enabled=False,
        autodiscover=False,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=0.5,
        broker_max_poll_records=2000,
        stream_buffer_maxsize=8192,
        key_serializer="raw",
        value_serializer="raw",
    )
    source = app.topic(topic, key_serializer="raw", value_serializer="raw")

    async def readings(stream: Any) -> None:
        async for events in stream.take_events(2000, within=0.05):
            for event in events:
                codec.decode(event.message.value, Reading)

    app.agent(source, name="readings")(readings)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--datadir", required=True)
    args = parser.parse_args()
    import uvloop  # the event loop of the stream worker too

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    app = create_app(args.bootstrap, args.topic, args.group, args.datadir)
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    app.main()


if __name__ == "__main__":
    main()
