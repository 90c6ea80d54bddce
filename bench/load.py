"""The offered load: a simulated fleet publishing over MQTT, in its own process.

``python -m bench.load SPEC.json`` reads a :class:`LoadSpec`, builds the fleet and its signal
models with the simulator's own code (``simulators.fleet``, ``simulators.signals``,
``simulators.payloads``) and publishes through the simulator's :class:`Publisher` over the
district gateways the harness provisioned. The schedule is a list of phases, each with its
own reporting interval, so one run can hold a steady rate, a burst or a staircase of rates;
every device numbers its messages ``1, 2, 3, ...`` across all phases, which is what the loss
and duplicate accounting relies on.

Device time runs with wall time (pacing by scenario time, compression 1). Each message's
``ts`` is its scheduled send time; the publisher starts the clock after it connected, so the
summary gives the offset between the schedule and the wall clock, which the harness
subtracts from every latency. Progress goes to a JSON-lines file a few times a second; the
summary, with the count per device, goes to a JSON file at the end. SIGTERM stops the
schedule early (the messages already handed over are still delivered).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import msgspec

from citystream.geo import DISTRICTS
from citystream.logs import configure_logging
from citystream.sensors import SENSOR_TYPES
from citystream.settings import get_settings
from simulators import fleet as fleet_mod
from simulators import payloads
from simulators.environment import Environment
from simulators.fleet import Device
from simulators.generator import Message, merge_streams
from simulators.publisher import Login, Pacing, Progress, Publisher, Route
from simulators.scenario import DEFAULT_MIX, FleetSpec, WeatherSpec
from simulators.signals import finish, model_for

logger = logging.getLogger(__name__)


class Phase(msgspec.Struct, frozen=True, array_like=True):
    duration_s: float
    interval_s: float
    """Every device reports once per interval during the phase."""


class Spike(msgspec.Struct, frozen=True, array_like=True):
    """Multiply one metric of one device for a while (the detectors should raise an alert)."""

    device: int
    start_s: float
    end_s: float
    factor: float


class LoadSpec(msgspec.Struct, frozen=True, kw_only=True):
    fleet: int
    seed: int
    id_prefix: str
    root: str
    qos: int = 1
    phases: list[Phase]
    spikes: list[Spike] = msgspec.field(default_factory=list)
    flat_out: bool = False
    """Send as fast as possible instead of on schedule (the device timestamps still follow it)."""
    logins: list[tuple[str, str, str, str]] = msgspec.field(default_factory=list)
    """Gateway logins: client id, user name, password, district."""
    progress_path: str = ""
    summary_path: str = ""


class LoadSummary(msgspec.Struct, kw_only=True):
    start_ms: int
    """The schedule's time zero (device time of the first phase's start)."""
    t0_wall_ms: float
    """Wall time at which the publisher's clock started."""
    offset_ms: float
    """``t0_wall_ms - start_ms``: add it to a device timestamp to get its scheduled wall time."""
    planned: int
    queued: int
    sent: int
    failed: int
    duration_s: float
    rate: float
    stopped_early: bool
    failures: dict[str, int]
    per_device: dict[str, int]
    phase_bounds_ms: list[int]
    per_phase: list[int]
    """Messages handed to the publisher in each phase."""
    spikes: list[tuple[str, int, int]]
    """(device id, start ms, end ms) in device time."""


def fleet_spec(size: int) -> FleetSpec:
    """Every sensor type in the default mix, each reporting once a second by default."""
    return FleetSpec(size=size, mix=dict(DEFAULT_MIX), interval_s=dict.fromkeys(SENSOR_TYPES, 1.0))


def build_fleet(size: int, seed: int, id_prefix: str) -> list[Device]:
    return fleet_mod.build(fleet_spec(size), seed, id_prefix)


def phase_bounds(start_ms: int, phases: list[Phase]) -> list[int]:
    """Start of each phase and the end of the last, in device time."""
    bounds = [start_ms]
    for p in phases:
        bounds.append(bounds[-1] + round(p.duration_s * 1000))
    return bounds


def schedule(device: Device, phases: list[Phase], bounds: list[int]) -> Iterator[int]:
    """Send times of one device: within each phase, every interval from the device's phase."""
    frac = device.phase_ms / device.interval_ms
    for phase, start, end in zip(phases, bounds, bounds[1:], strict=False):
        step = max(1, round(phase.interval_s * 1000))
        t = start + int(frac * step)
        while t < end:
            yield t
            t += step


def planned_count(devices: list[Device], phases: list[Phase], bounds: list[int]) -> int:
    total = 0
    for d in devices:
        frac = d.phase_ms / d.interval_ms
        for phase, start, end in zip(phases, bounds, bounds[1:], strict=False):
            step = max(1, round(phase.interval_s * 1000))
            first = start + int(frac * step)
            total += max(0, -(-(end - first) // step))
    return total


class Generator:
    """The message sequence of a spec; counts what it hands out per device; stops on request."""

    def __init__(self, spec: LoadSpec, devices: list[Device], start_ms: int) -> None:
        self.spec = spec
        self.devices = devices
        self.start_ms = start_ms
        self.bounds = phase_bounds(start_ms, spec.phases)
        self.env = Environment(
            start_ms, self.bounds[-1] - start_ms + 60_000, spec.seed, WeatherSpec(), [d.id for d in DISTRICTS]
        )
        self.spikes: dict[int, list[tuple[int, int, float]]] = {}
        for s in spec.spikes:
            if 0 <= s.device < len(devices):
                self.spikes.setdefault(s.device, []).append(
                    (start_ms + round(s.start_s * 1000), start_ms + round(s.end_s * 1000), s.factor)
                )
        self.counts = [0] * len(devices)
        self.per_phase = [0] * len(spec.phases)
        self.stopped = False

    def _stream(self, device: Device) -> Iterator[Message]:
        model = model_for(device, self.env)
        sensor_type, index = device.sensor_type, device.number
        first_metric = SENSOR_TYPES[sensor_type].metrics[0].name
        spikes = self.spikes.get(index, ())
        topic, qos = device.topic(self.spec.root), self.spec.qos
        for seq, t in enumerate(schedule(device, self.spec.phases, self.bounds), start=1):
            values = model.sample(t)
            for start, end, factor in spikes:
                if start <= t < end:
                    values[first_metric] *= factor
            yield Message(t, index, seq, topic, payloads.telemetry(t, seq, finish(sensor_type, values)), qos)

    def messages(self) -> Iterator[Message]:
        counts, per_phase, ends = self.counts, self.per_phase, self.bounds[1:]
        phase = 0
        for message in merge_streams([self._stream(d) for d in self.devices], self.start_ms):
            if self.stopped:
                return
            counts[message.device] += 1
            while message.at_ms >= ends[phase]:
                phase += 1
            per_phase[phase] += 1
            yield message


def gateway_route(devices: list[Device], logins: list[tuple[str, str, str, str]]) -> Route:
    by_district = {district: i for i, (_, _, _, district) in enumerate(logins)}
    missing = sorted({d.district for d in devices} - set(by_district))
    if missing:
        raise ValueError(f"no gateway login for districts {missing}")
    return Route(
        "gateway",
        [Login(*login) for login in logins],
        [by_district[d.district] for d in devices],
    )


class ProgressLog:
    """Writes ``{"t": wall s, "done": n, "failed": n}`` lines; remembers when the clock started."""

    def __init__(self, out: IO[str] | None) -> None:
        self.out = out
        self.t0_wall: float | None = None

    def __call__(self, p: Progress) -> None:
        now = time.time()
        if self.t0_wall is None:
            self.t0_wall = now - p.elapsed_s
        if self.out is not None:
            self.out.write(json.dumps({"t": round(now, 3), "done": p.done, "failed": p.failed}) + "\n")
            self.out.flush()


async def run(spec: LoadSpec) -> LoadSummary:
    settings = get_settings()
    devices = build_fleet(spec.fleet, spec.seed, spec.id_prefix)
    route = gateway_route(devices, spec.logins)
    publisher = Publisher(settings.mqtt, route, devices, spec.root, qos=spec.qos, status=False)
    start_ms = time.time_ns() // 1_000_000
    gen = Generator(spec, devices, start_ms)
    total = planned_count(devices, spec.phases, gen.bounds)
    loop = asyncio.get_running_loop()

    def stop() -> None:
        gen.stopped = True

    loop.add_signal_handler(signal.SIGTERM, stop)
    loop.add_signal_handler(signal.SIGINT, stop)
    out = Path(spec.progress_path).open("w") if spec.progress_path else None  # noqa: ASYNC230, SIM115
    progress = ProgressLog(out)
    try:
        summary = await publisher.run(
            gen.messages(),
            start_ms=start_ms,
            pacing=Pacing(0.0) if spec.flat_out else Pacing(None, 1.0),
            total=total,
            on_progress=progress,
        )
    finally:
        if out is not None:
            out.close()
    t0_wall_ms = (progress.t0_wall or time.time()) * 1000
    return LoadSummary(
        start_ms=start_ms,
        t0_wall_ms=round(t0_wall_ms, 1),
        offset_ms=round(t0_wall_ms - start_ms, 1),
        planned=total,
        queued=summary.queued,
        sent=summary.sent,
        failed=summary.failed,
        duration_s=round(summary.duration_s, 3),
        rate=round(summary.rate, 1),
        stopped_early=gen.stopped,
        failures=summary.failures,
        per_device={d.device_id: n for d, n in zip(devices, gen.counts, strict=True) if n},
        phase_bounds_ms=gen.bounds,
        per_phase=gen.per_phase,
        spikes=[
            (devices[i].device_id, start, end)
            for i, windows in sorted(gen.spikes.items())
            for start, end, _ in windows
        ],
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.load SPEC.json", file=sys.stderr)
        return 2
    configure_logging("WARNING")
    spec = msgspec.json.decode(Path(args[0]).read_bytes(), type=LoadSpec)
    summary = asyncio.run(run(spec))
    data = msgspec.json.encode(summary)
    if spec.summary_path:
        Path(spec.summary_path).write_bytes(data)
    else:
        sys.stdout.buffer.write(data + b"\n")
    return 0 if summary.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
