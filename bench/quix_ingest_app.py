"""The Quix Streams peer of the ingest bridge, for ``bench/ingest.py`` (not part of the pipeline).

A Quix Streams application whose only source is Quix's community ``MQTTSource`` (paho-mqtt
underneath), moving ``$share/{group}/{root}/#`` to one Kafka topic keyed by device id. The
source is subclassed for one thing: to resume a persistent MQTT 5 session (clean start off, a
session expiry) like the bridge does, which Quix's ``setup`` does not offer. It acknowledges on
receipt (paho's automatic acknowledgement), so it is at-most-once across its own crashes.

It runs in its own virtualenv (quixstreams pins pydantic below the project's version):

    ~/.cache/citystream/quix-venv/bin/python bench/quix_ingest_app.py --topic T ...
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from quixstreams import Application
from quixstreams.sources.community.mqtt import MQTTSource


class PersistentMQTTSource(MQTTSource):  # type: ignore[misc, unused-ignore]  # typed only where quixstreams is installed
    """Quix's MQTTSource on a persistent MQTT 5 session."""

    def __init__(self, *args: Any, session_expiry_s: int = 3600, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._session_expiry_s = session_expiry_s

    def setup(self) -> None:
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=paho.MQTTv5,
        )
        client.username_pw_set(self._username, self._password)
        client.on_message = self._mqtt_on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._session_expiry_s
        client.connect(self._server, self._port, clean_start=False, properties=props)
        client.subscribe(self._topic, qos=self._qos)
        client.loop_start()
        self._client = client  # type: ignore[assignment, unused-ignore]  # Quix declares it None


def device_key(msg: paho.MQTTMessage, _: Any) -> str:
    return msg.topic.split("/")[3]


def receive_time_ms(msg: paho.MQTTMessage, _: Any) -> int:
    return int(time.time() * 1000)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--mqtt-host", default="127.0.0.1")
    parser.add_argument("--mqtt-port", type=int, default=1883)
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--subscription", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--state-dir", required=True)
    args = parser.parse_args()
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=f"{args.client_id}-app",
        state_dir=args.state_dir,
        auto_create_topics=False,
        loglevel="WARNING",
        producer_extra_config={"enable.idempotence": True, "acks": "all", "linger.ms": 5},
    )
    topic = app.topic(args.topic, key_serializer="str", value_serializer="bytes")
    source = PersistentMQTTSource(
        topic=args.subscription,
        client_id=args.client_id,
        server=args.mqtt_host,
        port=args.mqtt_port,
        username=args.username,
        password=args.password,
        version="5",
        tls_enabled=False,
        qos=1,
        payload_deserializer=None,
        key_setter=device_key,
        timestamp_setter=receive_time_ms,
    )
    app.add_source(source, topic=topic)
    app.run()


if __name__ == "__main__":
    main()
