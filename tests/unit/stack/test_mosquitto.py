from __future__ import annotations

from pathlib import Path

import msgspec
from pydantic import SecretStr

from citystream.model import DeviceKind
from citystream.settings import MqttSettings, Settings, StackSettings
from ingest.registry import prepare_entry
from stack.mosquitto import (
    MIN_VERSION,
    MosquittoService,
    backports_suite,
    hash_password,
    verify_password,
    version_tuple,
)

# Written by `mosquitto_passwd -H sha512-pbkdf2` for the password "secret".
MOSQUITTO_PASSWD_LINE_HASH = "".join(
    (
        "$7$101$qlAmuXwhyIPQLVgE$",
        "qGQ3iwd4B2yn6LYMh/G6lyMDG1r/ImVlOClvkwxcxHXGUbGQA5qngjt4k3NqWAj1Nhb1HRG+ABX3Oe0MKX0Plw==",
    )
)


def test_hash_matches_mosquitto_passwd() -> None:
    assert verify_password("secret", MOSQUITTO_PASSWD_LINE_HASH)
    assert not verify_password("Secret", MOSQUITTO_PASSWD_LINE_HASH)


def test_hash_is_salted() -> None:
    assert hash_password("x") != hash_password("x")
    assert verify_password("x", hash_password("x"))
    assert not verify_password("x", "garbage")


def _service(tmp_path: Path) -> MosquittoService:
    settings = Settings(
        stack=StackSettings(state_dir=tmp_path, cache_dir=tmp_path / "cache"),
        mqtt=MqttSettings(ingest_password=SecretStr("ingest-secret")),
    )
    return MosquittoService(settings)


def test_acl_scopes_each_device_to_its_own_topics(tmp_path: Path) -> None:
    service = _service(tmp_path)
    a = prepare_entry("aq-gangnam-001", "gangnam", "air_quality", "pw-a")
    gw = prepare_entry("gw-mapo", "mapo", "", "pw-gw", gateway=True)
    revoked = msgspec.structs.replace(
        prepare_entry("aq-jongno-001", "jongno", "air_quality", "pw-r"), revoked=True
    )
    service.apply_registry([a, gw, revoked], reload=False)
    acl = service.acl_path.read_text()
    assert "user aq-gangnam-001\ntopic write +/gangnam/air_quality/aq-gangnam-001/telemetry\n" in acl
    assert "user gw-mapo\ntopic write +/mapo/+/+/+\n" in acl
    assert "aq-jongno-001" not in acl
    assert "user ingest\ntopic read #\n" in acl
    passwd = dict(line.split(":", 1) for line in service.passwd_path.read_text().splitlines())
    assert set(passwd) == {"ingest", "aq-gangnam-001", "gw-mapo"}
    assert verify_password("ingest-secret", passwd["ingest"])
    assert verify_password("pw-a", passwd["aq-gangnam-001"])
    assert gw.kind is DeviceKind.GATEWAY
    assert oct(service.passwd_path.stat().st_mode & 0o777) == "0o640"
    assert [d.device_id for d in service.load_devices()] == ["aq-gangnam-001", "aq-jongno-001", "gw-mapo"]


def test_config_has_no_anonymous_access_and_persistence(tmp_path: Path) -> None:
    service = _service(tmp_path)
    service.write_config()
    conf = service.conf_path.read_text()
    assert "allow_anonymous false" in conf
    assert "persistence true" in conf
    assert "listener 1883 127.0.0.1" in conf
    assert "max_queued_messages 1000000" in conf
    assert "listener 8883" not in conf


def test_versions_compare_as_numbers() -> None:
    assert version_tuple("2.0.11") < MIN_VERSION <= version_tuple("2.0.21")
    assert version_tuple("2.0.9") < version_tuple("2.0.11")
    assert version_tuple("2.1.0-1~bpo12+1") > MIN_VERSION
    assert version_tuple("unknown") == ()


def test_backports_only_on_debian(tmp_path: Path) -> None:
    release = tmp_path / "os-release"
    release.write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_CODENAME=bookworm\n')
    assert backports_suite(release) == "bookworm-backports"
    release.write_text("ID=ubuntu\nVERSION_CODENAME=noble\n")
    assert backports_suite(release) is None
    assert backports_suite(tmp_path / "missing") is None
