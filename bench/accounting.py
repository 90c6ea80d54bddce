"""Reading a segment's topics back: loss and duplicates, per-hop latency, alert latency.

Every record of the system's raw topic is decoded once. Its device and seq tick the ledger;
its broker append time minus the device timestamp (moved onto the wall clock by the load
generator's offset) is the device-to-Kafka latency; for our bridge the reading's receive time
splits that into device-to-bridge and bridge-to-Kafka. For our pipeline, each ``raised`` alert
event is matched to the readings it names (partition and offset in ``telemetry.raw``):
device-to-alert latency is the event's append time minus the newest of those readings'
scheduled send times.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from bench.kafka_io import LOG_APPEND_TIME_TYPE, Kafka, Record
from bench.latency import Latency, Timeline
from bench.ledger import FIRST, UNEXPECTED, Ledger
from bench.load import LoadSummary
from bench.systems import Decoded, System
from citystream import codec
from citystream.model import AlertEvent, AlertEventKind


@dataclass
class RaisedAlert:
    append_ms: int
    rule: str
    device_id: str | None
    offsets: list[tuple[int, int]]


@dataclass
class Accounts:
    ledger: Ledger
    hops: dict[str, Latency]
    timeline: Timeline
    """device-to-Kafka latency by second of device time (from the schedule's start)."""
    per_phase_unique: list[int]
    appended_per_s: dict[int, int] = field(default_factory=dict)
    """Records appended per wall second (from the load generator's clock start)."""
    append_ms: array[int] = field(default_factory=lambda: array("q"))
    """Broker append time of every record (for a rate that a held-back tail does not distort)."""
    undecodable: int = 0
    not_broker_stamped: int = 0
    alerts: list[RaisedAlert] = field(default_factory=list)
    alert_latency: Latency = field(default_factory=Latency)
    alerts_unmatched: int = 0

    def figures(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for hop, latency in self.hops.items():
            if latency.count:
                s = latency.summary()
                for k in ("p50", "p99", "p999", "max"):
                    out[f"{hop}_{k}_ms"] = s[k]
        if self.alert_latency.count:
            s = self.alert_latency.summary()
            for k in ("p50", "p99", "p999", "max"):
                out[f"device_alert_{k}_ms"] = s[k]
        return out

    def hop_rate(self) -> float:
        """Records per second between the 0.5th and the 99.5th percentile of the append times.

        Leaving out the extreme half percent keeps a few records that a system releases only when
        it stops (kcat holds the last lines of its input) from stretching the span.
        """
        times = sorted(self.append_ms)
        if len(times) < 2:
            return 0.0
        lo, hi = int(len(times) * 0.005), int(len(times) * 0.995) - 1
        span_ms = times[hi] - times[lo] if hi > lo else 0
        if span_ms <= 0:
            return 0.0
        return (hi - lo) / span_ms * 1000.0


class Accountant:
    def __init__(self, system: System, load: LoadSummary, *, latency: bool) -> None:
        self.system = system
        self.load = load
        self.latency = latency
        self.offset = round(load.offset_ms)
        self.bounds = load.phase_bounds_ms
        self.accounts = Accounts(
            ledger=Ledger(load.per_device),
            hops={"device_kafka": Latency(), "device_bridge": Latency(), "bridge_kafka": Latency()},
            timeline=Timeline(),
            per_phase_unique=[0] * max(0, len(self.bounds) - 1),
        )
        self.wanted: dict[tuple[int, int], int] = {}
        """(partition, offset) of readings behind alerts -> their scheduled send time."""

    def handle(self, records: list[Record]) -> None:
        acc = self.accounts
        tick, decode = acc.ledger.tick, self.system.decode
        dk, db, bk = acc.hops["device_kafka"], acc.hops["device_bridge"], acc.hops["bridge_kafka"]
        t0, start, offset, bounds = self.load.t0_wall_ms, self.load.start_ms, self.offset, self.bounds
        per_phase, per_s, wanted = acc.per_phase_unique, acc.appended_per_s, self.wanted
        latency = self.latency
        acc.append_ms.extend(r.timestamp for r in records)
        for record in records:
            d: Decoded | None = decode(record)
            second = int((record.timestamp - t0) // 1000)
            per_s[second] = per_s.get(second, 0) + 1
            if record.timestamp_type != LOG_APPEND_TIME_TYPE:
                acc.not_broker_stamped += 1
            if d is None:
                acc.undecodable += 1
                continue
            outcome = tick(d.device, d.seq)
            if outcome == UNEXPECTED:
                continue  # not from the load (a late probe): no latency either
            if outcome == FIRST:
                phase = bisect.bisect_right(bounds, d.ts) - 1
                if 0 <= phase < len(per_phase):
                    per_phase[phase] += 1
            scheduled = d.ts + offset
            if wanted and (record.partition, record.offset) in wanted:
                wanted[(record.partition, record.offset)] = scheduled
            if not latency:
                continue
            ms = record.timestamp - scheduled
            dk.record(ms)
            acc.timeline.record((d.ts - start) // 1000, ms)
            if d.received_ms >= 0:
                db.record(d.received_ms - scheduled)
                bk.record(record.timestamp - d.received_ms)

    def handle_alerts(self, records: list[Record]) -> None:
        for record in records:
            try:
                event = codec.decode(record.value or b"", AlertEvent)
            except (codec.DecodeError, codec.ValidationError):
                self.accounts.undecodable += 1
                continue
            if event.kind is not AlertEventKind.RAISED:
                continue
            offsets = [(o.partition, o.offset) for o in event.alert.offsets]
            self.accounts.alerts.append(
                RaisedAlert(record.timestamp, event.alert.rule, event.alert.device_id, offsets)
            )
            for key in offsets:
                self.wanted[key] = -1

    def match_alerts(self) -> None:
        acc = self.accounts
        for alert in acc.alerts:
            times = [self.wanted.get(key, -1) for key in alert.offsets]
            known = [t for t in times if t >= 0]
            if not known:
                acc.alerts_unmatched += 1
                continue
            acc.alert_latency.record(alert.append_ms - max(known))


async def account(
    kafka: Kafka,
    system: System,
    load: LoadSummary,
    *,
    raw_start: dict[TopicPartition, int],
    raw_end: dict[TopicPartition, int],
    events_topic: str | None,
    latency: bool,
) -> Accounts:
    """Read the raw topic (and alert events) of a segment back and account for every record."""
    accountant = Accountant(system, load, latency=latency)
    if events_topic is not None:
        tps = await kafka.partitions(events_topic)
        await kafka.scan(tps, accountant.handle_alerts)
    await kafka.scan(list(raw_end), accountant.handle, start=raw_start, end=raw_end)
    accountant.match_alerts()
    return accountant.accounts


def alert_rules(alerts: Sequence[RaisedAlert]) -> dict[str, int]:
    out: dict[str, int] = {}
    for a in alerts:
        out[a.rule] = out.get(a.rule, 0) + 1
    return out


def spike_hits(alerts: Sequence[RaisedAlert], spikes: Sequence[Sequence[Any]]) -> int:
    """How many spiked devices got at least one alert of their own."""
    spiked = {str(s[0]) for s in spikes}
    return len({a.device_id for a in alerts if a.device_id in spiked})
