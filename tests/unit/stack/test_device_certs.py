from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from citystream.errors import ConfigError
from citystream.settings import Settings, StackSettings
from stack import tls
from stack.device_certs import issue_device_certificate


def test_device_certificate_carries_the_device_id_and_the_ca_signs_it(tmp_path: Path) -> None:
    settings = Settings(stack=StackSettings(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache"))
    tls.ensure_ca(tmp_path / "state" / "tls")
    out = issue_device_certificate(settings, "aq-gangnam-001", tmp_path / "out")
    cert = x509.load_pem_x509_certificate(out.cert.read_bytes())
    ca = x509.load_pem_x509_certificate(out.ca.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "aq-gangnam-001"
    assert cert.issuer == ca.subject
    ca_key = ca.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    ca_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))  # type: ignore[arg-type]
    assert stat.S_IMODE(out.key.stat().st_mode) == 0o600
    # Nothing of the device is left in the CA's directory.
    assert sorted(p.name for p in (tmp_path / "state" / "tls").iterdir()) == [
        "ca.crt",
        "ca.key",
        "server.crt",
        "server.key",
    ]


@pytest.mark.parametrize("device_id", ["", "UPPER", "../etc", "a", "x" * 70])
def test_only_device_ids_get_certificates(tmp_path: Path, device_id: str) -> None:
    settings = Settings(stack=StackSettings(state_dir=tmp_path, cache_dir=tmp_path / "cache"))
    tls.ensure_ca(tmp_path / "tls")
    with pytest.raises(ConfigError):
        issue_device_certificate(settings, device_id, tmp_path / "out")


def test_needs_the_stack_ca(tmp_path: Path) -> None:
    settings = Settings(stack=StackSettings(state_dir=tmp_path, cache_dir=tmp_path / "cache"))
    with pytest.raises(ConfigError):
        issue_device_certificate(settings, "aq-gangnam-001", tmp_path / "out")
