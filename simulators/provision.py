"""Credentials for a simulated fleet, through the device registry.

Small fleets register every device (its own password; the broker's ACL lets it publish only
under its own id). Large fleets register one gateway per district, whose ACL covers every
device topic of that district, and their devices without usable credentials. Passwords are
generated per run and kept in memory only.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from typing import Literal

import msgspec
from aiokafka import AIOKafkaProducer

from citystream.geo import BY_ID
from citystream.model import DeviceEntry
from citystream.settings import Settings
from ingest.registry import DeviceRegistry, prepare_entry
from simulators.errors import ScenarioError
from simulators.fleet import Device
from simulators.publisher import Login, Route

logger = logging.getLogger(__name__)

DEVICE_MODE_LIMIT = 500
"""Largest fleet that gets one connection per device; above it, gateways."""
GATEWAY = "gw"


def choose_mode(requested: str, fleet_size: int) -> Literal["device", "gateway"]:
    if requested == "device":
        if fleet_size > DEVICE_MODE_LIMIT:
            raise ScenarioError(
                f"{fleet_size} devices is too many for one connection each "
                f"(at most {DEVICE_MODE_LIMIT}); use connection: gateway"
            )
        return "device"
    if requested == "gateway":
        return "gateway"
    return "device" if fleet_size <= DEVICE_MODE_LIMIT else "gateway"


def gateway_id(id_prefix: str, district: str) -> str:
    return f"{id_prefix}{GATEWAY}-{district}"


def plan_route(devices: Sequence[Device], mode: Literal["device", "gateway"], id_prefix: str) -> Route:
    """Logins with fresh passwords, and which login carries each device."""
    if mode == "device":
        logins = [Login(d.device_id, d.device_id, secrets.token_urlsafe(18), d.district) for d in devices]
        return Route("device", logins, list(range(len(devices))))
    districts = sorted({d.district for d in devices})
    index = {district: i for i, district in enumerate(districts)}
    logins = []
    for district in districts:
        gid = gateway_id(id_prefix, district)
        logins.append(Login(gid, gid, secrets.token_urlsafe(18), district))
    return Route("gateway", logins, [index[d.district] for d in devices])


async def provision(
    settings: Settings, route: Route, devices: Sequence[Device], *, register_devices: bool = True
) -> None:
    """Register the route's logins, and in gateway mode its devices (one batch, one reload).

    Ingest accepts telemetry only from registered devices, so a gateway's devices are
    registered too (``register_devices``), with a password nobody is given: they never connect
    themselves. The benchmark, which bypasses ingest, leaves them out.
    """
    entries: list[tuple[DeviceEntry, str]] = []
    if route.mode == "device":
        for device, login in zip(devices, route.logins, strict=True):
            entries.append((_entry(device, login.password), login.password))
    else:
        for login in route.logins:
            home = BY_ID[login.district]
            entry = prepare_entry(
                login.username, login.district, "", login.password, gateway=True, lat=home.lat, lon=home.lon
            )
            entries.append((entry, login.password))
        if register_devices:
            entries += _unusable_entries(devices)
    await DeviceRegistry(settings).add_many(entries)
    route.registered = [entry.device_id for entry, _ in entries]
    logger.info("provisioned %d registry entries (%s mode)", len(entries), route.mode)


def _entry(device: Device, password: str) -> DeviceEntry:
    return prepare_entry(
        device.device_id,
        device.district,
        device.sensor_type,
        password,
        lat=device.lat,
        lon=device.lon,
        interval_s=device.interval_ms / 1000,
    )


def _unusable_entries(devices: Sequence[Device]) -> list[tuple[DeviceEntry, str]]:
    """Entries for devices behind a gateway: one hash of a discarded random password, shared
    (hashing is the slow part of provisioning ten thousand devices)."""
    if not devices:
        return []
    template = _entry(devices[0], secrets.token_urlsafe(24))
    return [
        (
            msgspec.structs.replace(
                template,
                device_id=d.device_id,
                district=d.district,
                sensor_type=d.sensor_type,
                lat=d.lat,
                lon=d.lon,
                interval_s=d.interval_ms / 1000,
            ),
            "",
        )
        for d in devices
    ]


async def deprovision(settings: Settings, route: Route) -> None:
    """Remove what :func:`provision` registered (tombstones in one batch, one broker reload)."""
    ids = route.registered or [login.username for login in route.logins]
    registry = DeviceRegistry(settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        sent = [await producer.send(registry.topic, None, key=device_id.encode()) for device_id in ids]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    await registry.apply()
    logger.info("removed %d registry entries", len(ids))
