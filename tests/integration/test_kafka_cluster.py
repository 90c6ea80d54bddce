"""A 3-broker KRaft cluster of the test's own: a broker killed mid-stream loses nothing.

Replication factor 3, min in-sync replicas 2, producer ``acks=all`` with idempotence. The
drill prints its figures (leader failover time, producer stall, rejoin time); run with ``-s``
or look at the captured stdout to see them. The chaos round runs the pipeline's own
processes on the cluster (two bridges, two stream workers, a Mosquitto of its own) and kills
a broker and a worker mid-stream (``tests/integration/pipeline_chaos.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from citystream.settings import get_settings
from citystream.topics import TELEMETRY_RAW
from stack.failover import broker_failover_drill
from stack.kafka_cluster import KafkaCluster
from stack.sandbox import sandbox_settings
from tests.integration.pipeline_chaos import RoundConfig, chaos_round

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:subprocess .* is still running:ResourceWarning"),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    state = tmp_path_factory.mktemp("kafka-cluster")
    settings = sandbox_settings(get_settings(), state, brokers=3, heap="320m")
    c = KafkaCluster(settings)
    c.write_config()
    try:
        c.start()
        c.create_topics()
        yield c
    finally:
        c.daemon.stop()


def test_cluster_runs_three_brokers_with_replication_three(cluster: KafkaCluster) -> None:
    k = cluster.settings.kafka
    assert (k.brokers, k.replication_factor, k.min_insync_replicas) == (3, 3, 2)
    assert all(n.daemon.running() for n in cluster.nodes)
    props = cluster.properties(cluster.nodes[2])
    assert props["node.id"] == "3"
    assert props["controller.quorum.voters"].count("@") == 3
    assert cluster.healthy()


async def test_killing_a_broker_mid_stream_loses_nothing(cluster: KafkaCluster) -> None:
    report = await broker_failover_drill(cluster, TELEMETRY_RAW, rate=400, before_s=3.0, after_s=3.0)
    print(report.summary())  # the figures of the drill
    assert report.partitions_led, "the victim led no partition"
    assert report.leader_failover_s is not None, "no new leaders"
    survivors = {n.node_id for n in cluster.nodes} - {report.victim}
    assert {leader for leader, _ in report.isr_after.values()} <= survivors
    assert report.failed_sends == 0
    assert report.missing == []
    assert report.acknowledged == report.sent > 0
    assert report.rejoin_s is not None


async def test_chaos_round_broker_and_worker_killed_mid_stream(
    cluster: KafkaCluster, uid: str, tmp_path: Path
) -> None:
    """Two bridges and two stream workers on the cluster; a broker and a worker get SIGKILL."""
    report = await chaos_round(cluster, uid, tmp_path, RoundConfig())
    print(report.summary())  # the figures of the round
    assert report.leaders_s is not None, "the survivors never led every partition"
    assert report.rebalance_s is not None, "the surviving worker never owned every partition"
    assert report.resumed_s is not None, "the surviving worker never processed every partition"
    assert report.members_after == 1
    assert report.survivor_partitions == list(range(cluster.settings.kafka.partitions))
    assert report.published > 0
    assert report.missing == []
    assert report.in_raw == report.published
    assert report.windows_expected >= 2 * 2 * 2, "too few closed windows to judge (districts x metrics x 2)"
    assert report.window_mismatches == {}
    assert report.extra_windows == []
    assert report.rejoin_s is not None
