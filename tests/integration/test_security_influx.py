"""InfluxDB tokens per process: each may do only what its process needs."""

from __future__ import annotations

import time

import pytest
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write.point import Point
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from citystream.settings import Settings

pytestmark = pytest.mark.integration


def test_monitor_token_writes_only_the_aggregate_bucket(stack_settings: Settings, uid: str) -> None:
    i = stack_settings.influx
    token = stack_settings.monitor.write_token.get_secret_value()
    assert token, "stack up creates the monitor's token"
    assert token not in {i.sink_token.get_secret_value(), i.admin_token.get_secret_value()}
    point = Point("pipeline").tag("stage", f"t{uid}").field("rate", 1.0).time(time.time_ns())
    with InfluxDBClient(url=i.url, token=token, org=i.org) as monitor:
        writes = monitor.write_api(write_options=SYNCHRONOUS)
        writes.write(bucket=i.bucket_agg, record=point)
        with pytest.raises(ApiException) as raw:
            writes.write(bucket=i.bucket_raw, record=point)
        assert raw.value.status in (401, 403, 404)
        with pytest.raises(ApiException) as read:
            monitor.query_api().query(f'from(bucket: "{i.bucket_agg}") |> range(start: -1m) |> limit(n: 1)')
        assert read.value.status in (401, 403, 404)
        # It cannot even see the organisation, let alone create a bucket in it.
        with pytest.raises(InfluxDBError, match="cannot find organization"):
            monitor.buckets_api().create_bucket(bucket_name=f"t{uid}-nope", org=i.org)


def test_grafana_token_reads_and_writes_nothing(stack_settings: Settings, uid: str) -> None:
    i = stack_settings.influx
    with InfluxDBClient(url=i.url, token=i.dashboard_token.get_secret_value(), org=i.org) as grafana:
        for bucket in (i.bucket_raw, i.bucket_agg):
            grafana.query_api().query(f'from(bucket: "{bucket}") |> range(start: -1m) |> limit(n: 1)')
            with pytest.raises(ApiException) as denied:
                grafana.write_api(write_options=SYNCHRONOUS).write(
                    bucket=bucket, record=Point("x").tag("t", uid).field("v", 1.0)
                )
            assert denied.value.status in (401, 403, 404)
        # No other token is visible to it.
        assert grafana.authorizations_api().find_authorizations() == []
