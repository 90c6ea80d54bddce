"""InfluxDB 2.x built from the Go module proxy, its initial setup and least-privilege tokens.

The build is a small tools module under the cache directory that requires
``github.com/influxdata/influxdb/v2`` (with the one ``replace`` line of its own go.mod) and
``github.com/influxdata/pkg-config``; the latter compiles Flux's Rust library with cargo when
the Go build asks for it. No ``assets`` tag: the server has no UI, which the project does not
need (Grafana is the UI).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.domain.authorization import Authorization
from influxdb_client.domain.bucket_retention_rules import BucketRetentionRules
from influxdb_client.domain.onboarding_request import OnboardingRequest
from influxdb_client.domain.permission import Permission
from influxdb_client.domain.permission_resource import PermissionResource
from influxdb_client.rest import ApiException
from influxdb_client.service.setup_service import SetupService

from citystream.errors import StackError
from citystream.settings import Settings
from stack.process import Daemon, run, wait_until

logger = logging.getLogger(__name__)

PKG_CONFIG_VERSION = "v0.2.14"
GO_MOD = """\
module citystream.local/influxd-build

go 1.23.0

replace github.com/nats-io/nats-streaming-server v0.11.2 => {nats}
""".format(nats="github.com/influxdata/nats-streaming-server v0.11.3-0.20201112040610-c277f7560803")
TOOLS_GO = """\
//go:build tools

package tools

import (
\t_ "github.com/influxdata/influxdb/v2/cmd/influxd"
\t_ "github.com/influxdata/pkg-config"
)
"""
# Flux's Rust sources deny warnings that newer compilers raise; keep them warnings.
RUSTC_WRAPPER = '#!/bin/sh\nexec "$@" --cap-lints warn\n'


class InfluxService:
    name = "influxdb"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        i = settings.influx
        self.dir = settings.stack.state_dir / "influxdb"
        self.build_dir = settings.stack.cache_dir / "influxdb" / i.version
        self.binary = self.build_dir / "bin" / "influxd"
        host_port = i.url.split("://", 1)[-1].rstrip("/")
        self.bind = host_port
        self.daemon = Daemon(
            "influxd",
            [
                str(self.binary),
                "--bolt-path",
                str(self.dir / "influxd.bolt"),
                "--engine-path",
                str(self.dir / "engine"),
                "--sqlite-path",
                str(self.dir / "influxd.sqlite"),
                "--http-bind-address",
                host_port,
                "--reporting-disabled",
                "--log-level",
                "warn",
                "--storage-cache-snapshot-write-cold-duration",
                "1m",
            ],
            self.dir,
            marker="influxd",
        )

    # -- install -------------------------------------------------------------------------

    def installed(self) -> bool:
        return self.binary.is_file()

    def install(self) -> None:
        if self.installed():
            return
        for tool in ("go", "cargo"):
            if shutil.which(tool) is None:
                msg = f"building InfluxDB needs '{tool}' on PATH"
                raise StackError(msg)
        version = self.settings.influx.version
        src = self.build_dir / "src"
        bin_dir = self.build_dir / "bin"
        src.mkdir(parents=True, exist_ok=True)
        bin_dir.mkdir(parents=True, exist_ok=True)
        (src / "go.mod").write_text(GO_MOD)
        (src / "tools.go").write_text(TOOLS_GO)
        wrapper = bin_dir / "rustc-wrapper"
        wrapper.write_text(RUSTC_WRAPPER)
        wrapper.chmod(0o755)
        env = {
            "GOTOOLCHAIN": "local",
            "GOFLAGS": "-mod=mod",
            "CGO_ENABLED": "1",
            "RUSTUP_TOOLCHAIN": os.environ.get("RUSTUP_TOOLCHAIN", "stable"),
            "RUSTC_WRAPPER": str(wrapper),
            "PKG_CONFIG": str(bin_dir / "pkg-config"),
        }
        run(
            [
                "go",
                "get",
                f"github.com/influxdata/influxdb/v2@{version}",
                f"github.com/influxdata/pkg-config@{PKG_CONFIG_VERSION}",
            ],
            env=env,
            cwd=src,
            what="fetching InfluxDB sources from the Go module proxy",
        )
        run(
            ["go", "build", "-o", str(bin_dir / "pkg-config"), "github.com/influxdata/pkg-config"],
            env=env,
            cwd=src,
            what="building influxdata/pkg-config",
        )
        ldflags = f"-s -w -X main.version={version.lstrip('v')} -X main.commit=go-module-proxy"
        partial = bin_dir / "influxd.partial"
        run(
            [
                "go",
                "build",
                "-ldflags",
                ldflags,
                "-o",
                str(partial),
                "github.com/influxdata/influxdb/v2/cmd/influxd",
            ],
            env=env,
            cwd=src,
            what=f"building influxd {version} (compiles Flux's Rust library; minutes on a cold cache)",
        )
        partial.rename(self.binary)

    def version(self) -> str:
        if not self.installed():
            return "not installed"
        out = subprocess.run(  # noqa: S603  # fixed argv
            [str(self.binary), "version"], capture_output=True, text=True, check=False, timeout=10
        ).stdout
        parts = out.split()
        return parts[1] if len(parts) > 1 else "unknown"

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> bool:
        self.dir.mkdir(parents=True, exist_ok=True)
        started = self.daemon.start()
        wait_until(self.healthy, self.settings.stack.start_timeout_s, "influxdb", self.daemon)
        return started

    def healthy(self) -> bool:
        if not self.daemon.running():
            return False
        try:
            with urllib.request.urlopen(f"{self.settings.influx.url}/health", timeout=2) as resp:  # noqa: S310  # local URL from settings
                return bool(json.load(resp).get("status") == "pass")
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def port(self) -> int:
        return int(self.bind.rsplit(":", 1)[-1])

    # -- setup ---------------------------------------------------------------------------

    def setup(self) -> dict[str, str]:
        """Onboard once, create the buckets and the sink and dashboard tokens.

        Returns the secrets that were generated now (to be saved), empty when nothing changed.
        """
        i = self.settings.influx
        admin_token = i.admin_token.get_secret_value()
        new: dict[str, str] = {}
        with InfluxDBClient(url=i.url, timeout=30_000) as anon:
            allowed = SetupService(anon.api_client).get_setup().allowed
        if allowed:
            if not (admin_token and i.admin_password.get_secret_value()):
                msg = "InfluxDB setup needs the admin password and token from secrets.env"
                raise StackError(msg)
            with InfluxDBClient(url=i.url, timeout=30_000) as anon:
                SetupService(anon.api_client).post_setup(
                    onboarding_request=OnboardingRequest(
                        username=i.admin_user,
                        password=i.admin_password.get_secret_value(),
                        org=i.org,
                        bucket=i.bucket_raw,
                        retention_period_seconds=i.raw_retention_s,
                        token=admin_token,
                    )
                )
            logger.info("influxdb: onboarded org %s", i.org)
        with InfluxDBClient(url=i.url, token=admin_token, org=i.org, timeout=30_000) as client:
            try:
                org = client.organizations_api().find_organizations(org=i.org)[0]
            except ApiException as exc:
                msg = (
                    f"InfluxDB refused the admin token ({exc.status}); the data directory "
                    f"{self.dir} belongs to other secrets: run 'citystream stack reset'"
                )
                raise StackError(msg) from exc
            buckets = client.buckets_api()
            ids: dict[str, str] = {}
            for name, retention in ((i.bucket_raw, i.raw_retention_s), (i.bucket_agg, i.agg_retention_s)):
                bucket = buckets.find_bucket_by_name(name)
                if bucket is None:
                    bucket = buckets.create_bucket(
                        bucket_name=name,
                        org=org.id,
                        retention_rules=BucketRetentionRules(type="expire", every_seconds=retention),
                    )
                ids[name] = bucket.id
            auths = client.authorizations_api()
            existing = {a.description: a for a in auths.find_authorizations(org_id=org.id)}
            for desc, action, key in (
                ("citystream sinks (write only)", "write", "CITYSTREAM_INFLUX__SINK_TOKEN"),
                ("citystream dashboards (read only)", "read", "CITYSTREAM_INFLUX__DASHBOARD_TOKEN"),
            ):
                have = i.sink_token if action == "write" else i.dashboard_token
                if desc in existing and have.get_secret_value() == existing[desc].token:
                    continue
                if desc in existing:
                    auths.delete_authorization(existing[desc])
                perms = [
                    Permission(
                        action=action,
                        resource=PermissionResource(type="buckets", id=bucket_id, org_id=org.id),
                    )
                    for bucket_id in ids.values()
                ]
                auth = auths.create_authorization(
                    authorization=Authorization(org_id=org.id, permissions=perms, description=desc)
                )
                new[key] = auth.token
        return new


def reset_data(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
