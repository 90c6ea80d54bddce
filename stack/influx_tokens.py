"""InfluxDB tokens per process, each limited to the buckets and the action that process needs.

``stack/influx.py`` creates the sink's token (write ``city`` and ``city_agg``) and Grafana's
(read both). This adds the pipeline monitor's: it writes ``pipeline`` points to ``city_agg``
only, so it gets no access to the raw bucket and cannot read anything. The operator token
(``influx.admin_token``) stays with the stack and with one-off operator commands (rollup task).

| token                        | setting                      | may                         |
|------------------------------|------------------------------|-----------------------------|
| operator (all access)        | influx.admin_token           | set-up, tasks, tests        |
| sinks                        | influx.sink_token            | write city, city_agg        |
| monitor                      | monitor.write_token          | write city_agg              |
| Grafana / dashboards         | influx.dashboard_token       | read city, city_agg         |
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.domain.authorization import Authorization
from influxdb_client.domain.permission import Permission
from influxdb_client.domain.permission_resource import PermissionResource
from pydantic import SecretStr

from citystream.errors import StackError
from citystream.settings import Settings

logger = logging.getLogger(__name__)


class TokenSpec(NamedTuple):
    description: str
    env: str
    action: str
    buckets: tuple[str, ...]
    """``raw`` and/or ``agg``."""


PROCESS_TOKENS = (
    TokenSpec(
        "citystream monitor (write city_agg only)",
        "CITYSTREAM_MONITOR__WRITE_TOKEN",
        "write",
        ("agg",),
    ),
)


def _current(settings: Settings, env: str) -> SecretStr:
    if env == "CITYSTREAM_MONITOR__WRITE_TOKEN":
        return settings.monitor.write_token
    msg = f"no setting for {env}"
    raise StackError(msg)


def ensure_process_tokens(settings: Settings) -> dict[str, str]:
    """Create the tokens whose configured value InfluxDB does not know; return the new ones."""
    i = settings.influx
    new: dict[str, str] = {}
    with InfluxDBClient(
        url=i.url, token=i.admin_token.get_secret_value(), org=i.org, timeout=30_000
    ) as client:
        org = client.organizations_api().find_organizations(org=i.org)[0]
        buckets = client.buckets_api()
        ids = {}
        for key, name in (("raw", i.bucket_raw), ("agg", i.bucket_agg)):
            bucket = buckets.find_bucket_by_name(name)
            if bucket is None:
                msg = f"InfluxDB bucket {name} is missing; run 'citystream stack up'"
                raise StackError(msg)
            ids[key] = bucket.id
        auths = client.authorizations_api()
        existing = {a.description: a for a in auths.find_authorizations(org_id=org.id)}
        for spec in PROCESS_TOKENS:
            have = _current(settings, spec.env).get_secret_value()
            if spec.description in existing and have == existing[spec.description].token:
                continue
            if spec.description in existing:
                auths.delete_authorization(existing[spec.description])
            perms = [
                Permission(
                    action=spec.action,
                    resource=PermissionResource(type="buckets", id=ids[b], org_id=org.id),
                )
                for b in spec.buckets
            ]
            auth = auths.create_authorization(
                authorization=Authorization(org_id=org.id, permissions=perms, description=spec.description)
            )
            new[spec.env] = auth.token
            logger.info("influxdb: token %r created", spec.description)
    return new
