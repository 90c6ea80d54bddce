"""InfluxDB for the benchmark: per-run buckets (admin token) and counting what arrived.

A reading is one point per (device tags, time); writing it again overwrites the same point, so
InfluxDB cannot hold duplicates: the count of ``seq`` fields is the number of distinct readings.
"""

from __future__ import annotations

import logging

from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.domain.bucket_retention_rules import BucketRetentionRules
from influxdb_client.rest import ApiException

from citystream.settings import InfluxSettings

logger = logging.getLogger(__name__)

RETENTION_S = 86_400


def _client(influx: InfluxSettings) -> InfluxDBClient:
    return InfluxDBClient(
        url=influx.url, token=influx.admin_token.get_secret_value(), org=influx.org, timeout=60_000
    )


def create_buckets(influx: InfluxSettings, names: list[str]) -> None:
    with _client(influx) as client:
        api = client.buckets_api()
        org = client.organizations_api().find_organizations(org=influx.org)[0]
        for name in names:
            if api.find_bucket_by_name(name) is None:
                rules = BucketRetentionRules(type="expire", every_seconds=RETENTION_S)
                api.create_bucket(bucket_name=name, org=org.id, retention_rules=rules)


def delete_buckets(influx: InfluxSettings, names: list[str]) -> None:
    with _client(influx) as client:
        api = client.buckets_api()
        for name in names:
            try:
                found = api.find_bucket_by_name(name)
                if found is not None:
                    api.delete_bucket(found)
            except ApiException as exc:
                logger.warning("deleting bucket %s: %s", name, exc)


def count_readings(influx: InfluxSettings, bucket: str, exclude_device: str = "") -> int:
    """Distinct readings in ``bucket`` (points of measurement ``reading`` with a ``seq`` field).

    The range ends far in the future: ``range(start: 0)`` alone stops at now() and would miss
    readings whose device clock runs ahead.
    """
    flux = (
        f'from(bucket: "{bucket}") |> range(start: 0, stop: 2100-01-01T00:00:00Z) '
        '|> filter(fn: (r) => r._measurement == "reading" and r._field == "seq" '
        f'and r.device_id != "{exclude_device}") '
        "|> group() |> count()"
    )
    with _client(influx) as client:
        values = [r.get_value() for table in client.query_api().query(flux) for r in table.records]
    return int(values[0]) if values else 0
