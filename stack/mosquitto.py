"""Mosquitto 2 from Debian's package, with a generated config, password file and ACL.

Authentication is never anonymous. The password file and ACL are generated from the device
registry (a snapshot kept under the state directory) plus the service users; a reload
(SIGHUP) applies a change without dropping connected clients.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import msgspec

from citystream import codec
from citystream.errors import StackError
from citystream.model import DeviceEntry, DeviceKind
from citystream.settings import Settings
from stack.process import Daemon, port_open, run, wait_until
from stack.startup import wait_exec

logger = logging.getLogger(__name__)

PBKDF2_ITERATIONS = 101
RELOAD_SETTLE_S = 0.3
PBKDF2_SALT_BYTES = 12


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """Mosquitto 2's ``$7$`` PBKDF2-SHA512 hash, the format ``mosquitto_passwd`` writes."""
    salt = salt if salt is not None else secrets.token_bytes(PBKDF2_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return f"$7${PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    try:
        _, kind, iterations, salt_b64, _ = hashed.split("$")
        salt = base64.b64decode(salt_b64)
    except ValueError:
        return False
    if kind != "7" or int(iterations) != PBKDF2_ITERATIONS:
        return False
    return secrets.compare_digest(hash_password(password, salt=salt), hashed)


MIN_VERSION = (2, 0, 21)
"""The Mosquitto the stack installs when the system has an older one (see
:meth:`MosquittoService.install`)."""
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BACKPORTS_LIST = Path("/etc/apt/sources.list.d/citystream-backports.list")


def version_tuple(version: str) -> tuple[int, ...]:
    """``"2.0.11"`` -> ``(2, 0, 11)``; ``()`` when it is not a version."""
    parts = re.findall(r"\d+", version.split("-", maxsplit=1)[0])
    return tuple(int(p) for p in parts[:3])


def backports_suite(os_release: Path = Path("/etc/os-release")) -> str | None:
    """``{codename}-backports`` on Debian, ``None`` elsewhere."""
    try:
        fields = dict(line.split("=", 1) for line in os_release.read_text().splitlines() if "=" in line)
    except OSError:
        return None
    codename = fields.get("VERSION_CODENAME", "").strip('"')
    if fields.get("ID", "").strip('"') != "debian" or not codename:
        return None
    return f"{codename}-backports"


class MosquittoService:
    name = "mosquitto"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.stack.state_dir / "mosquitto"
        self.conf_path = self.dir / "mosquitto.conf"
        self.passwd_path = self.dir / "passwd"
        self.acl_path = self.dir / "acl"
        self.devices_path = self.dir / "devices.json"
        self.daemon = Daemon(
            "mosquitto", [self.binary(), "-c", str(self.conf_path)], self.dir, marker="mosquitto"
        )

    # -- install -------------------------------------------------------------------------

    @staticmethod
    def binary() -> str:
        return shutil.which("mosquitto") or "/usr/sbin/mosquitto"

    def installed(self) -> bool:
        """Installed, and at :data:`MIN_VERSION` or later where Debian backports can give it."""
        if not Path(self.binary()).is_file() or shutil.which("mosquitto_passwd") is None:
            return False
        return version_tuple(self.version()) >= MIN_VERSION or backports_suite() is None

    def install(self) -> None:
        """Mosquitto from Debian: its backports suite where the release has one (Debian 12
        ships 2.0.11, which crashes now and then under the bridge's shared subscriptions with
        expiring sessions; bookworm-backports has 2.0.21), else the release's own package. A
        Mosquitto already at :data:`MIN_VERSION` or later is kept."""
        present = Path(self.binary()).is_file()
        if present and version_tuple(self.version()) >= MIN_VERSION:
            return
        if shutil.which("apt-get") is None:
            if present:
                logger.warning("mosquitto %s is older than %s; upgrade it", self.version(), MIN_VERSION)
                return
            msg = "mosquitto is not installed and apt-get is not available; install Mosquitto 2"
            raise StackError(msg)
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        packages = ["mosquitto", "mosquitto-clients"]
        suite = backports_suite()
        if suite is not None:
            try:
                BACKPORTS_LIST.write_text(f"deb {DEBIAN_MIRROR} {suite} main\n")
                run(["apt-get", "update", "-q"], env=env, what="apt-get update")
                run(
                    ["apt-get", "install", "-y", "-q", "-t", suite, *packages],
                    env=env,
                    what="apt-get install",
                )
            except (OSError, StackError) as exc:
                logger.warning("mosquitto from %s: %s; using the release's package", suite, exc)
                if present:
                    return
            else:
                return
        try:
            run(["apt-get", "install", "-y", "-q", *packages], env=env, what="apt-get install")
        except StackError:
            run(["apt-get", "update", "-q"], env=env, what="apt-get update")
            run(["apt-get", "install", "-y", "-q", *packages], env=env, what="apt-get install")

    def version(self) -> str:
        try:
            out = subprocess.run(  # noqa: S603  # fixed argv
                [self.binary(), "-h"], capture_output=True, text=True, check=False, timeout=10
            ).stdout
        except OSError:
            return "not installed"
        match = re.search(r"mosquitto version (\S+)", out)
        return match.group(1) if match else "unknown"

    # -- configuration -------------------------------------------------------------------

    def write_config(self) -> None:
        m = self.settings.mqtt
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "data").mkdir(exist_ok=True)
        lines = [
            "# Generated by citystream stack; edits are overwritten.",
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {self.passwd_path}",
            f"acl_file {self.acl_path}",
            "persistence true",
            f"persistence_location {self.dir / 'data'}/",
            "autosave_interval 30",
            f"max_queued_messages {m.max_queued_messages}",
            "max_queued_bytes 0",
            f"max_inflight_messages {m.max_inflight_messages}",
            # Larger than the 64 KiB payload contract so that oversize payloads reach the
            # bridge and come back to the device integrator as a dead-letter reason.
            "max_packet_size 1048576",
            "message_size_limit 0",
            "persistent_client_expiration 14d",
            "set_tcp_nodelay true",
            "user root",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "connection_messages false",
        ]
        if m.plain_enabled:
            lines += ["", f"listener {m.port} 127.0.0.1", "protocol mqtt"]
        if m.tls_enabled:
            tls = self.settings.stack.state_dir / "tls"
            lines += [
                "",
                f"listener {m.tls_port} 127.0.0.1",
                "protocol mqtt",
                f"cafile {tls / 'ca.crt'}",
                f"certfile {tls / 'server.crt'}",
                f"keyfile {tls / 'server.key'}",
                "tls_version tlsv1.2",
            ]
            if m.require_client_cert:
                lines += ["require_certificate true", "use_identity_as_username true"]
        self.conf_path.write_text("\n".join(lines) + "\n")
        if not self.passwd_path.exists():
            self.apply_registry(self.load_devices(), reload=False)

    def load_devices(self) -> list[DeviceEntry]:
        """The registry snapshot the auth files were last generated from."""
        if not self.devices_path.exists():
            return []
        return codec.decode(self.devices_path.read_bytes(), list[DeviceEntry])

    def apply_registry(self, devices: Iterable[DeviceEntry], *, reload: bool = True) -> None:
        """Regenerate the password file and ACL from the registry and reload Mosquitto.

        Connected clients stay connected; a revoked device is refused at its next connect.
        """
        devices = sorted(devices, key=lambda d: d.device_id)
        m = self.settings.mqtt
        ingest_secret = m.ingest_password.get_secret_value()
        if not ingest_secret:
            msg = "no ingest password configured; run 'citystream stack up' first"
            raise StackError(msg)
        passwd = [f"{m.ingest_username}:{hash_password(ingest_secret)}"]
        acl = [
            "# Generated by citystream from the device registry; edits are overwritten.",
            f"user {m.ingest_username}",
            "topic read #",
            "",
        ]
        for d in devices:
            if d.revoked:
                continue
            passwd.append(f"{d.device_id}:{d.password_hash}")
            # Any topic root ('+') so that test runs can use their own root; the district,
            # sensor type and device id are always the registered ones.
            if d.kind is DeviceKind.GATEWAY:
                acl += [f"user {d.device_id}", f"topic write +/{d.district}/+/+/+", ""]
            else:
                base = f"+/{d.district}/{d.sensor_type}/{d.device_id}"
                acl += [
                    f"user {d.device_id}",
                    f"topic write {base}/telemetry",
                    f"topic readwrite {base}/status",
                    "",
                ]
        self.dir.mkdir(parents=True, exist_ok=True)
        _write_private(self.passwd_path, "\n".join(passwd) + "\n")
        _write_private(self.acl_path, "\n".join(acl) + "\n")
        _write_private(self.devices_path, codec.encode(devices).decode())
        if reload:
            self.reload()

    def reload(self) -> None:
        if not self.daemon.signal(signal.SIGHUP):
            logger.info("mosquitto is not running; the new auth files apply at its next start")
            return
        # Mosquitto applies SIGHUP on its next loop pass; give it that long so a device that
        # connects right after registering finds its credentials.
        time.sleep(RELOAD_SETTLE_S)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> bool:
        started = self.daemon.start()
        wait_exec(self.daemon)
        m = self.settings.mqtt
        port = m.port if m.plain_enabled else m.tls_port
        wait_until(
            lambda: port_open(m.host, port),
            self.settings.stack.start_timeout_s,
            "mosquitto",
            self.daemon,
        )
        return started

    def healthy(self) -> bool:
        m = self.settings.mqtt
        port = m.port if m.plain_enabled else m.tls_port
        return self.daemon.running() and port_open(m.host, port)

    def port(self) -> int:
        m = self.settings.mqtt
        return m.port if m.plain_enabled else m.tls_port


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


def devices_from_json(data: bytes) -> list[DeviceEntry]:
    try:
        return codec.decode(data, list[DeviceEntry])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        msg = f"device snapshot is unreadable: {exc}"
        raise StackError(msg) from exc
