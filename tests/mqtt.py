"""A small synchronous MQTT 5 test client over paho-mqtt 2.x that records what it receives."""

from __future__ import annotations

import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode


class TestClient:
    __test__ = False  # not a pytest class

    def __init__(self, host: str, port: int, username: str | None, password: str | None) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.host, self.port = host, port
        self.messages: list[mqtt.MQTTMessage] = []
        self.connect_rc: ReasonCode | None = None
        self.puback: dict[int, ReasonCode] = {}
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: ReasonCode, props: Any = None) -> None:
        self.connect_rc = rc
        self._connected.set()

    def _on_message(self, c: Any, u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(msg)

    def _on_publish(self, c: Any, u: Any, mid: int, rc: ReasonCode, props: Properties) -> None:
        self.puback[mid] = rc

    def connect(self, timeout_s: float = 10.0) -> ReasonCode:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(timeout_s):
            raise AssertionError("no CONNACK")
        assert self.connect_rc is not None
        return self.connect_rc

    def subscribe(self, topic: str, qos: int = 1) -> None:
        result, _ = self.client.subscribe(topic, qos)
        assert result == mqtt.MQTT_ERR_SUCCESS
        time.sleep(0.3)

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> mqtt.MQTTMessageInfo:
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(10)
        return info

    def wait_messages(self, count: int, timeout_s: float = 10.0) -> list[mqtt.MQTTMessage]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.05)
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
