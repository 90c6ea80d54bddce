"""The deterministic message sequence of a scenario.

A :class:`Plan` turns a scenario, a start instant and a topic root into the fleet, the city
environment and the resolved incidents; :meth:`Plan.messages` yields every MQTT message in
the order it is sent, each with its scenario send time. Generation uses scenario time only and
per-device random streams derived from the seed: the same inputs give the same payloads in the
same order on any machine, however fast or slow the publishing turns out to be.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from citystream.geo import DISTRICTS
from simulators import fleet, payloads
from simulators.environment import Environment
from simulators.errors import ScenarioError
from simulators.fleet import Device
from simulators.incidents import DeviceFaults, Incident, Reorder, resolve
from simulators.labels import Label
from simulators.scenario import Kind, Scenario, parse_start
from simulators.signals import finish, model_for


class Message(NamedTuple):
    at_ms: int
    """Scenario time the message is sent at (the publisher paces on it)."""
    device: int
    """Number (position in :attr:`Plan.devices`) of the sending device."""
    position: int
    """Position in the device's own sequence; with the two above, the sending order."""
    topic: str
    payload: bytes
    qos: int


class Plan:
    """Everything a scenario run sends, decided before anything is sent."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        root: str,
        start_ms: int | None = None,
        id_prefix: str | None = None,
    ) -> None:
        fixed = parse_start(scenario.start)
        if start_ms is None:
            if fixed is None:
                raise ScenarioError("the scenario starts 'now': give the plan a start instant")
            start_ms = fixed
        self.scenario = scenario
        self.root = root
        self.qos = scenario.qos
        self.start_ms = start_ms
        self.duration_ms = round(scenario.duration_s * 1000)
        self.end_ms = start_ms + self.duration_ms
        prefix = scenario.id_prefix if id_prefix is None else id_prefix
        self.devices = fleet.build(scenario.fleet, scenario.seed, prefix)
        self.topics = [d.topic(root) for d in self.devices]
        self.env = Environment(
            start_ms, self.duration_ms, scenario.seed, scenario.weather, [d.id for d in DISTRICTS]
        )
        self.incidents = resolve(
            scenario.incidents,
            self.devices,
            start_ms=start_ms,
            duration_ms=self.duration_ms,
            seed=scenario.seed,
        )
        self._by_device: dict[int, list[Incident]] = {}
        for incident in self.incidents:
            for i in incident.devices:
                self._by_device.setdefault(i, []).append(incident)

    def labels(self) -> list[Label]:
        return [incident.label(self.devices) for incident in self.incidents]

    def incidents_of(self, device: Device) -> list[Incident]:
        return self._by_device.get(device.number, [])

    # -- the message sequence ------------------------------------------------------------

    def messages(self) -> Iterator[Message]:
        """Every telemetry message, ordered by (send time, device number, position)."""
        return merge_streams([self._stream(d) for d in self.devices], self.start_ms)

    def _stream(self, device: Device) -> Iterator[Message]:
        incidents = self.incidents_of(device)
        if incidents:
            return self._incident_stream(device, incidents)
        return self._plain_stream(device)

    def _plain_stream(self, device: Device) -> Iterator[Message]:
        model = model_for(device, self.env)
        sample, sensor_type, index = model.sample, device.sensor_type, device.number
        topic, qos = self.topics[index], self.qos
        encode = payloads.telemetry
        t, end, step = self.start_ms + device.phase_ms, self.end_ms, device.interval_ms
        seq = 0
        while t < end:
            seq += 1
            yield Message(t, index, seq, topic, encode(t, seq, finish(sensor_type, sample(t))), qos)
            t += step

    def _incident_stream(self, device: Device, incidents: list[Incident]) -> Iterator[Message]:
        model = model_for(device, self.env)
        faults = DeviceFaults(device, incidents)
        reorder = Reorder()
        sensor_type, index = device.sensor_type, device.number
        topic, qos = self.topics[index], self.qos
        t, end, step = self.start_ms + device.phase_ms, self.end_ms, device.interval_ms
        seq = n = 0
        while t < end:
            # Sample even when nothing is sent, so the model's random stream stays aligned.
            values = finish(sensor_type, faults.values(t, model.sample(t)))
            delivery = faults.delivery(t)
            if delivery.dropout:
                t += step
                continue
            seq += 1
            payload = faults.payload(t + delivery.skew_ms, seq, values, malformed=delivery.malformed)
            out = reorder.release() if reorder.held and not delivery.reorder else []
            if delivery.reorder:
                out += reorder.hold(t, [payload] * delivery.copies, delivery.reorder)
            else:
                out += [(t, payload)] * delivery.copies
            for at, p in out:
                n += 1
                yield Message(at, index, n, topic, p, qos)
            t += step
        for at, p in reorder.release():
            n += 1
            yield Message(at, index, n, topic, p, qos)

    # -- what the scenario says, without generating it -------------------------------------

    def expected_counts(self) -> dict[str, int]:
        """Telemetry messages per device id, from the schedule and the delivery incidents."""
        counts: dict[str, int] = {}
        for d in self.devices:
            first = self.start_ms + d.phase_ms
            incidents = [i for i in self.incidents_of(d) if i.kind in (Kind.DROPOUT, Kind.DUPLICATE_BURST)]
            if not incidents:
                counts[d.device_id] = _count_between(first, d.interval_ms, self.start_ms, self.end_ms)
                continue
            total = 0
            for t in range(first, self.end_ms, d.interval_ms):
                active = [i for i in incidents if i.active(t)]
                if any(i.kind is Kind.DROPOUT for i in active):
                    continue
                total += max((i.copies for i in active), default=1)
            counts[d.device_id] = total
        return counts

    def expected_total(self) -> int:
        return sum(self.expected_counts().values())


BUCKET_MS = 1000


def merge_streams(streams: list[Iterator[Message]], start_ms: int) -> Iterator[Message]:
    """Merge time-ordered device streams into one ordered sequence.

    The same order as ``heapq.merge`` but by one-second buckets: a fleet reports at regular
    intervals, so each bucket holds a few hundred items that one sort puts in order, much
    cheaper than a heap of ten thousand streams.
    """
    buckets: dict[int, list[tuple[Message, Iterator[Message]]]] = {}
    for stream in streams:
        item = next(stream, None)
        if item is not None:
            buckets.setdefault((item.at_ms - start_ms) // BUCKET_MS, []).append((item, stream))
    while buckets:
        b = min(buckets)
        entries = buckets.pop(b)
        out: list[Message] = []
        while entries:
            later: list[tuple[Message, Iterator[Message]]] = []
            for item, stream in entries:
                out.append(item)
                nxt = next(stream, None)
                if nxt is None:
                    continue
                nb = (nxt.at_ms - start_ms) // BUCKET_MS
                if nb == b:
                    later.append((nxt, stream))
                else:
                    buckets.setdefault(nb, []).append((nxt, stream))
            entries = later
        out.sort()
        yield from out


def _count_between(first: int, step: int, low: int, high: int) -> int:
    """How many of ``first + k * step`` (k >= 0) lie in ``[low, high)``."""
    low = max(low, first)
    if low >= high:
        return 0
    k0 = -((first - low) // step)
    k1 = -((first - high) // step)
    return max(0, k1 - k0)


def digest(messages: Iterable[Message]) -> str:
    """SHA-256 over topics and payloads in order: equal digests, equal runs."""
    h = hashlib.sha256()
    for m in messages:
        h.update(m.topic.encode())
        h.update(b"\x00")
        h.update(len(m.payload).to_bytes(4, "big"))
        h.update(m.payload)
    return h.hexdigest()
