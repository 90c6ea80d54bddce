from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from citystream.settings import InfluxSettings, KafkaSettings, Settings, SinkSettings, WebhookSubscriber
from stack.secret_scan import configured_secrets, log_files, scan_paths, scan_text, variants

TOKEN = "tok-Ab3/x+y=z&q 0123456789"


def _settings() -> Settings:
    secret = SecretStr("hook-secret-0123456789")
    hook = WebhookSubscriber(name="ops", url="http://127.0.0.1:1/", secret=secret)
    return Settings(
        influx=InfluxSettings(sink_token=SecretStr(TOKEN), admin_token=SecretStr("short")),
        kafka=KafkaSettings(jobs_password=SecretStr("jobs-pw-0123456789")),
        sink=SinkSettings(webhook_subscribers=(hook,)),
    )


def test_collects_every_secret_setting_env_file_and_extra(tmp_path: Path) -> None:
    env = tmp_path / "secrets.env"
    env.write_text("# comment\nCITYSTREAM_MQTT__INGEST_PASSWORD=ingest-pw-0123456789\n")
    found = configured_secrets(_settings(), env_files=[env], extra={"device aq-1": "device-pw-0123456789"})
    assert found == {
        "influx.sink_token": TOKEN,
        "kafka.jobs_password": "jobs-pw-0123456789",
        "sink.webhook_subscribers[0].secret": "hook-secret-0123456789",
        "secrets.env:CITYSTREAM_MQTT__INGEST_PASSWORD": "ingest-pw-0123456789",
        "device aq-1": "device-pw-0123456789",
    }  # "short" and the empty defaults are too short to scan for


def test_finds_raw_url_and_json_forms_and_names_but_never_shows_the_secret() -> None:
    secrets = {"influx.sink_token": TOKEN}
    forms = variants(TOKEN)
    text = "\n".join(
        [
            "all good here",
            f"Authorization: Token {TOKEN}",
            f"GET /?token={forms['url']}",
            '{"token": "' + TOKEN + '"}',
        ]
    )
    findings = scan_text(text, secrets, "app.log")
    assert [(f.where, f.secret, f.form) for f in findings] == [
        ("app.log:2", "influx.sink_token", "raw"),
        ("app.log:3", "influx.sink_token", "url"),
        ("app.log:4", "influx.sink_token", "raw"),
    ]
    assert all(TOKEN not in " ".join(f) for f in findings)


def test_json_escaped_form() -> None:
    secret = 'quote"and\\backslash-0123'
    findings = scan_text('{"p": "quote\\"and\\\\backslash-0123"}', {"p": secret})
    assert [f.form for f in findings] == ["json"]


def test_clean_text_gives_nothing() -> None:
    assert scan_text("token=[hidden] password=****", {"t": TOKEN}) == []


def test_log_files_skip_kafka_segments_and_scan_paths_reads_them(tmp_path: Path) -> None:
    segment_dir = tmp_path / "kafka" / "data" / "telemetry.raw-0"
    segment_dir.mkdir(parents=True)
    (segment_dir / "00000000000000000000.log").write_bytes(b"\0" + b"x" * 20)
    (tmp_path / "influxdb" / "engine").mkdir(parents=True)
    (tmp_path / "influxdb" / "engine" / "x.log").write_text("")
    (tmp_path / "kafka" / "kafka.log").write_text("started\n")
    (tmp_path / "mosquitto").mkdir()
    (tmp_path / "mosquitto" / "mosquitto.log").write_text(f"oops {TOKEN}\n")
    logs = log_files(tmp_path)
    names = [p.relative_to(tmp_path).as_posix() for p in logs]
    assert names == ["kafka/kafka.log", "mosquitto/mosquitto.log"]
    findings = scan_paths(logs, {"influx.sink_token": TOKEN})
    assert [(Path(f.where.rsplit(":", 1)[0]).name, f.secret) for f in findings] == [
        ("mosquitto.log", "influx.sink_token")
    ]
