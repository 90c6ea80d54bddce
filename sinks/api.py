"""The alert acknowledgement API: operators and consumers acknowledge or silence alerts.

Every route but the probes needs ``Authorization: Bearer <sink.api_token>`` (compared in
constant time; 401 otherwise). Each accepted request becomes one ``AlertCommand`` on
``alerts.commands`` (keyed by the alert key, or by the silence's matchers); the stream jobs
apply it to the alert's state in ``alerts``. The answer, 202, comes once Kafka has the command.

- ``POST /alerts/{key}/ack``: body ``{"by": "...", "note": "..."}``;
- ``POST /silences``: body ``{"by", "until_ms", "starts_ms"?, "note"?}`` plus at least one
  matcher of ``alert_key``, ``rule``, ``district``, ``device_id`` (a maintenance window is a
  silence that starts later);
- ``POST /silences/expire``: the same matchers, ends a silence early (``unsilence``);
- ``GET /healthz``, ``/readyz``, ``/metrics``: no token.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from citystream import codec
from citystream.errors import ConfigError, RejectedMessageError, ServiceUnavailableError
from citystream.kafka_client import Principal, client_kwargs
from citystream.model import AlertCommand, AlertCommandKind
from citystream.settings import Settings
from citystream.topics import ALERTS_COMMANDS, topic_name
from sinks.metrics import ApiMetrics, HttpServer, health_routes

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024
MAX_KEY_CHARS = 512
MAX_BY_CHARS = 200
MAX_NOTE_CHARS = 2000


class AckRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    by: str
    note: str = ""


class SilenceRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    by: str
    until_ms: int
    starts_ms: int | None = None
    alert_key: str | None = None
    rule: str | None = None
    district: str | None = None
    device_id: str | None = None
    note: str = ""


class BadRequestError(RejectedMessageError):
    def __init__(self, detail: str) -> None:
        super().__init__("bad_request", detail)


def _check_text(name: str, value: str, limit: int, *, required: bool) -> None:
    if required and not value.strip():
        raise BadRequestError(f"'{name}' must not be empty")
    if len(value) > limit:
        raise BadRequestError(f"'{name}' is longer than {limit} characters")


def ack_command(key: str, request: AckRequest, now_ms: int, command_id: str) -> AlertCommand:
    _check_text("key", key, MAX_KEY_CHARS, required=True)
    _check_text("by", request.by, MAX_BY_CHARS, required=True)
    _check_text("note", request.note, MAX_NOTE_CHARS, required=False)
    return AlertCommand(
        command_id=command_id,
        kind=AlertCommandKind.ACKNOWLEDGE,
        issued_ms=now_ms,
        by=request.by,
        alert_key=key,
        note=request.note,
    )


def silence_command(
    request: SilenceRequest, kind: AlertCommandKind, now_ms: int, command_id: str
) -> AlertCommand:
    _check_text("by", request.by, MAX_BY_CHARS, required=True)
    _check_text("note", request.note, MAX_NOTE_CHARS, required=False)
    matchers = {
        "alert_key": request.alert_key,
        "rule": request.rule,
        "district": request.district,
        "device_id": request.device_id,
    }
    if not any(v for v in matchers.values()):
        raise BadRequestError("a silence needs at least one of alert_key, rule, district, device_id")
    for name, value in matchers.items():
        if value is not None:
            _check_text(name, value, MAX_KEY_CHARS, required=True)
    starts_ms = now_ms if request.starts_ms is None else request.starts_ms
    if kind == AlertCommandKind.SILENCE and request.until_ms <= max(starts_ms, now_ms):
        raise BadRequestError("'until_ms' must be in the future and after 'starts_ms'")
    return AlertCommand(
        command_id=command_id,
        kind=kind,
        issued_ms=now_ms,
        by=request.by,
        starts_ms=starts_ms,
        until_ms=request.until_ms,
        note=request.note,
        **matchers,
    )


def command_key(command: AlertCommand) -> bytes:
    """The Kafka key: the alert key, or the matchers of a silence that has none."""
    if command.alert_key:
        return command.alert_key.encode()
    parts = (command.rule, command.district, command.device_id)
    return ("silence:" + ":".join(p or "*" for p in parts)).encode()


def bearer_ok(header: str | None, token: str) -> bool:
    if not header or not token:
        return False
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AlertApi:
    """The HTTP API; :meth:`start` opens the Kafka producer and the server."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
        port: int | None = None,
    ) -> None:
        self.settings = settings
        self._token = settings.sink.api_token.get_secret_value()
        if not self._token:
            raise ConfigError("the alert API needs a token: set CITYSTREAM_SINK__API_TOKEN")
        self.topic = topic_name(ALERTS_COMMANDS, settings.kafka)
        self.registry = registry or CollectorRegistry()
        self.metrics = ApiMetrics(self.registry)
        self._producer: AIOKafkaProducer | None = None
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._auth])
        app.add_routes(
            [
                web.post("/alerts/{key:.+}/ack", self._ack),
                web.post("/silences", self._silence),
                web.post("/silences/expire", self._unsilence),
                *health_routes(self.registry, self._live, self._live),
            ]
        )
        self.http = HttpServer(app, settings.sink.http_host, settings.sink.api_port if port is None else port)

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            **client_kwargs(self.settings, Principal.SINK_WEBHOOK), acks="all", enable_idempotence=True
        )
        try:
            await self._producer.start()
        except KafkaError as exc:
            await self._producer.stop()
            self._producer = None
            raise ServiceUnavailableError(f"Kafka at {self.settings.kafka.bootstrap}: {exc}") from exc
        await self.http.start()
        logger.info("alert API on %s:%d, commands to %s", self.http.host, self.http.port, self.topic)

    async def stop(self) -> None:
        await self.http.stop()
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    def _live(self) -> tuple[bool, str]:
        ok = self._producer is not None
        return ok, "ok" if ok else "not started"

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "?"
        if request.path in ("/healthz", "/readyz", "/metrics"):
            return await handler(request)
        if not bearer_ok(request.headers.get("Authorization"), self._token):
            self.metrics.requests.labels(route, "401").inc()
            return web.json_response(
                {"error": "a valid bearer token is required"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="citystream"'},
            )
        response = await handler(request)
        self.metrics.requests.labels(route, str(response.status)).inc()
        return response

    async def _ack(self, request: web.Request) -> web.Response:
        try:
            body = codec.decode(await request.read(), AckRequest)
            command = ack_command(request.match_info["key"], body, _now_ms(), uuid.uuid4().hex)
        except (codec.DecodeError, codec.ValidationError, BadRequestError) as exc:
            return _bad_request(exc)
        return await self._send(command)

    async def _silence(self, request: web.Request) -> web.Response:
        return await self._silence_like(request, AlertCommandKind.SILENCE)

    async def _unsilence(self, request: web.Request) -> web.Response:
        return await self._silence_like(request, AlertCommandKind.UNSILENCE)

    async def _silence_like(self, request: web.Request, kind: AlertCommandKind) -> web.Response:
        try:
            body = codec.decode(await request.read(), SilenceRequest)
            command = silence_command(body, kind, _now_ms(), uuid.uuid4().hex)
        except (codec.DecodeError, codec.ValidationError, BadRequestError) as exc:
            return _bad_request(exc)
        return await self._send(command)

    async def _send(self, command: AlertCommand) -> web.Response:
        producer = self._producer
        if producer is None:
            return web.json_response({"error": "not ready"}, status=503)
        try:
            meta = await producer.send_and_wait(self.topic, codec.encode(command), key=command_key(command))
        except KafkaError as exc:
            logger.warning("alert command %s not written: %s", command.command_id, exc)
            return web.json_response({"error": "commands topic unavailable, try again"}, status=503)
        self.metrics.commands.labels(str(command.kind)).inc()
        logger.info(
            "alert command %s %s by %s (key %s)",
            command.kind,
            command.command_id,
            command.by,
            command_key(command).decode(),
        )
        return web.json_response(
            {
                "command_id": command.command_id,
                "kind": str(command.kind),
                "alert_key": command.alert_key,
                "partition": meta.partition,
                "offset": meta.offset,
            },
            status=202,
        )


def _bad_request(exc: Exception) -> web.Response:
    return web.json_response({"error": str(exc)}, status=400)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
