"""The load generator's schedule: phases, counts per device and per phase, spikes."""

from __future__ import annotations

import itertools

import msgspec

from bench.load import Generator, LoadSpec, Phase, Spike, build_fleet, phase_bounds, planned_count, schedule

START = 1_764_000_000_000


def spec(phases: list[Phase], spikes: list[Spike] | None = None, fleet: int = 40) -> LoadSpec:
    return LoadSpec(fleet=fleet, seed=3, id_prefix="t-", root="r", phases=phases, spikes=spikes or [])


def test_phase_bounds() -> None:
    assert phase_bounds(START, [Phase(10, 1.0), Phase(2.5, 0.2)]) == [START, START + 10_000, START + 12_500]


def test_schedule_follows_each_phase_interval() -> None:
    device = build_fleet(10, 1, "t-")[0]
    phases = [Phase(3, 1.0), Phase(1, 0.25)]
    times = list(schedule(device, phases, phase_bounds(START, phases)))
    first = times[0] - START
    assert 0 <= first < 1000
    assert [t - times[0] for t in times[:3]] == [0, 1000, 2000]
    assert len(times) == 3 + 4
    assert all(b > a for a, b in itertools.pairwise(times))


def test_generator_counts_match_the_plan_and_seqs_run_from_one() -> None:
    phases = [Phase(4, 1.0), Phase(2, 0.5)]
    s = spec(phases)
    devices = build_fleet(s.fleet, s.seed, s.id_prefix)
    gen = Generator(s, devices, START)
    messages = list(gen.messages())
    assert len(messages) == planned_count(devices, phases, gen.bounds) == 40 * (4 + 4)
    assert gen.per_phase == [160, 160]
    assert sum(gen.counts) == len(messages)
    assert [m.at_ms for m in messages] == sorted(m.at_ms for m in messages)
    seqs: dict[int, list[int]] = {}
    for m in messages:
        seqs.setdefault(m.device, []).append(msgspec.json.decode(m.payload)["seq"])
    assert all(v == list(range(1, len(v) + 1)) for v in seqs.values())


def test_spike_multiplies_the_first_metric_only_inside_its_window() -> None:
    phases = [Phase(6, 1.0)]
    spikes = [Spike(device=0, start_s=2.0, end_s=4.0, factor=6.0)]
    s = spec(phases, spikes, fleet=10)
    devices = build_fleet(s.fleet, s.seed, s.id_prefix)
    plain = [m for m in Generator(spec(phases, fleet=10), devices, START).messages() if m.device == 0]
    spiked = [m for m in Generator(s, devices, START).messages() if m.device == 0]
    assert devices[0].sensor_type == "air_quality"
    for a, b in zip(plain, spiked, strict=True):
        va, vb = msgspec.json.decode(a.payload)["values"], msgspec.json.decode(b.payload)["values"]
        inside = START + 2000 <= a.at_ms < START + 4000
        assert (va["pm10"] != vb["pm10"]) is inside
        assert va["pm25"] == vb["pm25"]


def test_a_stopped_generator_yields_no_more() -> None:
    s = spec([Phase(5, 1.0)])
    gen = Generator(s, build_fleet(s.fleet, s.seed, s.id_prefix), START)
    stream = gen.messages()
    first = [next(stream) for _ in range(10)]
    gen.stopped = True
    assert list(stream) == []
    assert sum(gen.counts) == len(first)
