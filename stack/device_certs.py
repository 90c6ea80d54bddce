"""Client certificates for devices, signed by the stack's CA.

With ``mqtt.require_client_cert`` the TLS listener asks every client for a certificate signed
by the stack's CA and takes its common name as the MQTT user name
(``use_identity_as_username``), so the certificate of device ``aq-gangnam-001`` has that CN and
the broker's ACL for that device applies. The device also needs ``ca.crt`` to check the broker.

Issuing one: ``issue_device_certificate(settings, "aq-gangnam-001", Path("out"))`` writes
``out/aq-gangnam-001.crt``, ``out/aq-gangnam-001.key`` (mode 0600) and ``out/ca.crt``.
Revoking a device is done in the registry (``citystream devices revoke``): its user leaves the
ACL, so a certificate that still verifies may connect but can publish nothing.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import NamedTuple

from citystream.errors import ConfigError
from citystream.settings import Settings
from stack import tls

DEVICE_ID = re.compile(r"[a-z0-9][a-z0-9-]{2,63}")


class DeviceCertificate(NamedTuple):
    cert: Path
    key: Path
    ca: Path


def issue_device_certificate(settings: Settings, device_id: str, out_dir: Path) -> DeviceCertificate:
    """Sign a new key pair for ``device_id`` (its CN) and write it with the CA certificate."""
    if not DEVICE_ID.fullmatch(device_id):
        msg = f"not a device id: {device_id!r}"
        raise ConfigError(msg)
    tls_dir = settings.stack.state_dir / "tls"
    if not (tls_dir / "ca.key").exists():
        msg = f"no CA in {tls_dir}; run 'citystream stack up' first"
        raise ConfigError(msg)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"device-{device_id}"
    tls.issue_certificate(tls_dir, stem, device_id, server=False)
    cert, key = out_dir / f"{device_id}.crt", out_dir / f"{device_id}.key"
    shutil.move(tls_dir / f"{stem}.crt", cert)
    shutil.move(tls_dir / f"{stem}.key", key)
    key.chmod(0o600)
    ca = out_dir / "ca.crt"
    if ca.resolve() != (tls_dir / "ca.crt").resolve():
        shutil.copyfile(tls_dir / "ca.crt", ca)
    return DeviceCertificate(cert, key, ca)
