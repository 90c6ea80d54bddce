"""The Python peer: two Quix Streams apps doing what our bridge and our window job do.

Runs with the interpreter of the benchmark's own Quix Streams virtualenv (its dependencies
conflict with the project's), as a script, never imported by the project::

    quix-venv/bin/python -P bench/quix_app.py source --bootstrap ... < password
    quix-venv/bin/python -P bench/quix_app.py windows --bootstrap ...

``source``: Quix Streams' ``MQTTSource`` (QoS 1, the ingest user, ``{root}/#``) into a Kafka
topic, key = MQTT topic, value = the payload bytes unchanged, timestamp = receive time.

``windows``: from that topic, one row per metric keyed ``district/sensor_type/metric`` (from
the MQTT topic), regrouped by that key, 1-minute tumbling windows on the device time with
count, mean, min and max, each closed window to the output topic.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from quixstreams import Application
from quixstreams.dataframe.windows.aggregations import Count, Max, Mean, Min
from quixstreams.sources.community.mqtt import MQTTSource


def _receive_time(_message: Any, _payload: Any) -> int:
    return time.time_ns() // 1_000_000


def run_source(args: argparse.Namespace) -> None:
    password = sys.stdin.readline().strip()
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        state_dir=args.state_dir,
        loglevel="WARNING",
        auto_create_topics=True,
        producer_extra_config={"enable.idempotence": True, "acks": "all", "linger.ms": 5},
    )
    topic = app.topic(args.output, key_serializer="str", value_serializer="bytes")
    source = MQTTSource(
        topic=f"{args.root}/#",
        client_id=args.client_id,
        server=args.host,
        port=args.port,
        username=args.user,
        password=password,
        version="5",
        tls_enabled=False,
        payload_deserializer=None,
        timestamp_setter=_receive_time,
        qos=1,
    )
    app.add_source(source, topic=topic)
    app.run()


def _device_time(value: Any, _headers: Any, timestamp: int, _kind: Any) -> int:
    ts = value.get("ts") if isinstance(value, dict) else None
    return int(ts) if isinstance(ts, int) else timestamp


def _rows(value: Any, key: Any, _timestamp: int, _headers: Any) -> list[dict[str, Any]]:
    parts = str(key).split("/")
    values = value.get("values") if isinstance(value, dict) else None
    if len(parts) != 5 or not isinstance(values, dict):
        return []
    return [{"series": f"{parts[1]}/{parts[2]}/{metric}", "v": v} for metric, v in values.items()]


def run_windows(args: argparse.Namespace) -> None:
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        state_dir=args.state_dir,
        auto_offset_reset="earliest",
        loglevel="WARNING",
        auto_create_topics=True,
    )
    raw = app.topic(
        args.input, key_deserializer="str", value_deserializer="json", timestamp_extractor=_device_time
    )
    out = app.topic(args.output, key_serializer="str", value_serializer="json")
    sdf = app.dataframe(raw)
    sdf = sdf.apply(_rows, expand=True, metadata=True)
    sdf = sdf.group_by("series", name="series")
    sdf = (
        sdf.tumbling_window(60_000, grace_ms=args.grace_ms)
        .agg(count=Count(), mean=Mean("v"), min=Min("v"), max=Max("v"))
        .final()
    )
    sdf.to_topic(out)
    app.run()


def main() -> None:
    parser = argparse.ArgumentParser(prog="quix_app", description="the Quix Streams peer of the benchmark")
    parser.add_argument("app", choices=("source", "windows"))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--input", default="")
    parser.add_argument("--root", default="city")
    parser.add_argument("--client-id", default="quix-peer")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--user", default="ingest")
    parser.add_argument("--grace-ms", type=int, default=60_000)
    args = parser.parse_args()
    if args.app == "source":
        run_source(args)
    else:
        run_windows(args)


if __name__ == "__main__":
    main()
