"""``citystream ingest`` and ``citystream devices add|list|revoke|rotate|remove|sync``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from citystream.settings import Settings, get_settings

if TYPE_CHECKING:
    from cli.stages import SubParsers


def register(sub: SubParsers[argparse.ArgumentParser]) -> None:
    ingest = sub.add_parser("ingest", help="run the MQTT to Kafka bridge until SIGINT/SIGTERM")
    add_bridge_arguments(ingest)
    ingest.set_defaults(func=_ingest)

    devices = sub.add_parser("devices", help="the device registry (credentials and ACL of every device)")
    dsub = devices.add_subparsers(dest="action", required=True)

    add = dsub.add_parser("add", help="register a device; prints its password when none is given")
    add.add_argument("device_id")
    add.add_argument("--district", required=True, help="romanised Seoul district, e.g. gangnam")
    add.add_argument("--sensor-type", default="", help="air_quality, noise, weather, ... (not for gateways)")
    add.add_argument("--password", default=None, help="default: a generated one, printed once")
    add.add_argument("--gateway", action="store_true", help="may publish for every device of its district")
    add.add_argument("--lat", type=float, default=None)
    add.add_argument("--lon", type=float, default=None)
    add.add_argument("--interval-s", type=float, default=None, help="nominal reporting interval")
    add.add_argument("--replace", action="store_true", help="overwrite an existing device")
    add.set_defaults(func=_add)

    lst = dsub.add_parser("list", help="registered devices")
    lst.add_argument("--district", default=None)
    lst.add_argument("--revoked", action="store_true", help="include revoked devices")
    lst.set_defaults(func=_list)

    revoke = dsub.add_parser("revoke", help="refuse the device at its next connect")
    revoke.add_argument("device_id")
    revoke.set_defaults(func=_revoke)

    rotate = dsub.add_parser("rotate", help="give the device a new password (printed)")
    rotate.add_argument("device_id")
    rotate.add_argument("--password", default=None)
    rotate.set_defaults(func=_rotate)

    remove = dsub.add_parser("remove", help="delete devices from the registry")
    remove.add_argument("device_ids", nargs="+")
    remove.set_defaults(func=_remove)

    sync = dsub.add_parser("sync", help="regenerate Mosquitto's password file and ACL and reload it")
    sync.set_defaults(func=_sync)


def add_bridge_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--instance", default=None, help="instance name (default: settings, '1')")
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="HTTP port of /metrics, /healthz, /readyz (0: any)"
    )


def bridge_settings(args: argparse.Namespace, settings: Settings) -> Settings:
    update: dict[str, object] = {}
    if args.instance is not None:
        update["instance"] = args.instance
    if args.metrics_port is not None:
        update["metrics_port"] = args.metrics_port
    if not update:
        return settings
    return settings.model_copy(update={"ingest": settings.ingest.model_copy(update=update)})


def _ingest(args: argparse.Namespace) -> int:
    import asyncio

    from ingest.service import run_bridge

    return asyncio.run(run_bridge(bridge_settings(args, get_settings())))


def _add(args: argparse.Namespace) -> int:
    import asyncio

    from ingest.registry import DeviceRegistry

    entry, password = asyncio.run(
        DeviceRegistry(get_settings()).add(
            args.device_id,
            args.district,
            args.sensor_type,
            password=args.password,
            gateway=args.gateway,
            lat=args.lat,
            lon=args.lon,
            interval_s=args.interval_s,
            replace=args.replace,
        )
    )
    print(f"registered {entry.kind} {entry.device_id} ({entry.district}, {entry.sensor_type})")
    if args.password is None:
        print(f"password: {password}")
    return 0


def _list(args: argparse.Namespace) -> int:
    import asyncio

    from ingest.registry import DeviceRegistry

    entries = asyncio.run(DeviceRegistry(get_settings(), apply_to_broker=False).load())
    rows = sorted(
        (
            e
            for e in entries.values()
            if (args.revoked or not e.revoked) and args.district in (None, e.district)
        ),
        key=lambda e: (e.district, e.sensor_type, e.device_id),
    )
    print(f"{'device_id':<32} {'kind':<8} {'district':<14} {'sensor_type':<12} state")
    for e in rows:
        state = "revoked" if e.revoked else "active"
        print(f"{e.device_id:<32} {e.kind:<8} {e.district:<14} {e.sensor_type:<12} {state}")
    print(f"{len(rows)} devices")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    import asyncio

    from ingest.registry import DeviceRegistry

    asyncio.run(DeviceRegistry(get_settings()).revoke(args.device_id))
    print(f"revoked {args.device_id}; it is refused at its next connect")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    import asyncio

    from ingest.registry import DeviceRegistry

    entry, password = asyncio.run(DeviceRegistry(get_settings()).rotate(args.device_id, args.password))
    print(f"new password for {entry.device_id}" + ("" if args.password else f": {password}"))
    return 0


def _remove(args: argparse.Namespace) -> int:
    import asyncio

    from ingest.registry import DeviceRegistry

    asyncio.run(DeviceRegistry(get_settings()).remove(*args.device_ids))
    print(f"removed {len(args.device_ids)} device(s)")
    return 0


def _sync(args: argparse.Namespace) -> int:
    import asyncio

    from ingest.registry import DeviceRegistry

    active = asyncio.run(DeviceRegistry(get_settings()).apply())
    print(f"Mosquitto's auth files regenerated from the registry: {active} active devices")
    return 0
