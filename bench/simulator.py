"""Simulator throughput into the local Mosquitto, counted by an independent subscriber.

One simulator process (this one) publishes a 10,000-device fleet over 25 district-gateway
connections as fast as it can, at QoS 0 and then at QoS 1. A separate ``mosquitto_sub``
process (the ingest user, QoS 1) timestamps every message it receives; its first and last
timestamps give the rate the broker actually delivered, and its count shows any loss.

    .venv/bin/python -m bench.simulator --quick

Targets: 30,000 msg/s at QoS 0 and 15,000 msg/s at QoS 1. Results go to
``bench/results/simulator.json``. With ``--rate N`` the run is paced instead and passes when
the subscriber saw N msg/s within 5 % (``bench/results/simulator-paced.json``). The machine is
shared: the load average is recorded with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from citystream.logs import configure_logging
from citystream.settings import Settings, get_settings
from simulators import run
from simulators.generator import Plan
from simulators.scenario import from_dict

logger = logging.getLogger("bench.simulator")

RESULTS = Path(__file__).parent / "results" / "simulator.json"
PACED_RESULTS = Path(__file__).parent / "results" / "simulator-paced.json"
TARGETS = {0: 30_000.0, 1: 15_000.0}
PACING_TOLERANCE = 0.05
"""A paced run passes when the subscriber saw the target rate within 5 %."""
FLEET = 10_000
SUBSCRIBE_SETTLE_S = 1.0
DRAIN_QUIET_S = 2.0


def bench_scenario(messages: int, qos: int, rate: float) -> Any:
    """A fleet of every sensor type, long enough for about ``messages`` telemetry messages."""
    per_minute = FLEET * (1 - 1 / 12) + FLEET / 12 / 5  # waste bins report every 5 minutes
    minutes = max(1, round(messages / per_minute))
    return from_dict(
        {
            "name": "bench",
            "seed": 1,
            "start": "2025-06-02T07:00:00+09:00",
            "duration": f"{minutes}m",
            "rate": rate,
            "qos": qos,
            "connection": "gateway",
            "fleet": {"size": FLEET},
        },
        source="bench",
    )


class Subscriber:
    """``mosquitto_sub`` writing one receive timestamp per telemetry message to a file."""

    def __init__(self, settings: Settings, root: str, out: Path) -> None:
        m = settings.mqtt
        binary = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"
        argv = [
            binary, "-h", m.host, "-p", str(m.port), "-q", "1",
            "-u", m.ingest_username, "-P", m.ingest_password.get_secret_value(),
            "-t", f"{root}/+/+/+/telemetry", "-F", "%U",
        ]  # fmt: skip
        self.out = out
        self.handle = out.open("wb")
        self.proc = subprocess.Popen(argv, stdout=self.handle, stderr=subprocess.PIPE)

    def lines(self) -> int:
        self.handle.flush()
        with self.out.open("rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))

    def wait_for(self, expected: int, timeout_s: float) -> int:
        """Wait until ``expected`` messages arrived or nothing arrived for a while."""
        deadline = time.monotonic() + timeout_s
        seen, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            n = self.lines()
            if n >= expected:
                return n
            if n != seen:
                seen, quiet_since = n, time.monotonic()
            elif time.monotonic() - quiet_since > DRAIN_QUIET_S:
                return n
            time.sleep(0.2)
        return self.lines()

    def stop(self) -> dict[str, float]:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.handle.close()
        stamps = [float(x) for x in self.out.read_text().split()]
        if len(stamps) < 2:
            return {"received": float(len(stamps)), "rate": 0.0, "span_s": 0.0, "p10_1s_rate": 0.0}
        span = stamps[-1] - stamps[0]
        per_second: dict[int, int] = {}
        for s in stamps:
            per_second[int(s - stamps[0])] = per_second.get(int(s - stamps[0]), 0) + 1
        # The first and the last second are partial.
        full_seconds = sorted(n for second, n in per_second.items() if 0 < second < max(per_second))
        full_seconds = full_seconds or sorted(per_second.values())
        return {
            "received": float(len(stamps)),
            "rate": (len(stamps) - 1) / span if span > 0 else 0.0,
            "span_s": span,
            "p10_1s_rate": float(full_seconds[len(full_seconds) // 10]),
        }


def one_run(settings: Settings, qos: int, messages: int, rate: float, tmp: Path) -> dict[str, Any]:
    uid = uuid.uuid4().hex[:8]
    root = f"bench{uid}"
    scenario = bench_scenario(messages, qos, rate)
    planned = Plan(scenario, root=root).expected_total()
    sub = Subscriber(settings, root, tmp / f"sub-{qos}.txt")
    time.sleep(SUBSCRIBE_SETTLE_S)
    cpu0 = time.process_time()
    try:
        result = asyncio.run(
            run.run_scenario(
                settings,
                scenario,
                root=root,
                id_prefix=f"b{uid}-",
                status=False,
                deprovision=True,
                register_devices=False,  # the broker is measured alone; ingest is not in the path
            )
        )
    finally:
        cpu = time.process_time() - cpu0
        received = sub.wait_for(planned, timeout_s=60)
        stats = sub.stop()
    s = result.summary
    target = rate or TARGETS[qos]
    meets = abs(stats["rate"] - rate) <= PACING_TOLERANCE * rate if rate else stats["rate"] >= target
    out = {
        "qos": qos,
        "paced_rate": rate or None,
        "planned": s.planned,
        "sent": s.sent,
        "failed": s.failed,
        "publisher_rate": round(s.rate),
        "publisher_duration_s": round(s.duration_s, 2),
        "subscriber_received": received,
        "subscriber_rate": round(stats["rate"]),
        "subscriber_p10_1s_rate": round(stats["p10_1s_rate"]),
        "lost": s.planned - received,
        "simulator_cpu_s": round(cpu, 2),
        "cpu_us_per_message": round(cpu / max(1, s.planned) * 1e6, 1),
        "connections": s.connections,
        "target": target,
        "meets_target": bool(meets and received == s.planned),
    }
    logger.info("QoS %d: %s", qos, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.simulator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages (about 20 s in all)")
    parser.add_argument("--rate", type=float, default=0.0, help="pace to this rate instead of flat out")
    parser.add_argument("--qos", type=int, choices=(0, 1), action="append", help="only this QoS")
    args = parser.parse_args(argv)
    configure_logging("WARNING")
    logger.setLevel(logging.INFO)
    settings = get_settings()
    sizes = {0: 200_000, 1: 120_000} if args.quick else {0: 450_000, 1: 300_000}
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-sim-") as tmp:
        for qos in args.qos or (0, 1):
            runs.append(one_run(settings, qos, sizes[qos], args.rate, Path(tmp)))
    report: dict[str, Any] = {
        "bench": "simulator",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
        },
        "fleet": FLEET,
        "mode": "quick" if args.quick else "full",
        "runs": runs,
    }
    results = PACED_RESULTS if args.rate else RESULTS
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(report, indent=2) + "\n")
    for r in runs:
        verdict = "meets" if r["meets_target"] else "MISSES"
        print(
            f"QoS {r['qos']}: subscriber {r['subscriber_rate']:>7,} msg/s "
            f"(publisher {r['publisher_rate']:,}, p10 of 1 s {r['subscriber_p10_1s_rate']:,}), "
            f"{r['subscriber_received']}/{r['planned']} received, "
            f"{r['cpu_us_per_message']} us CPU/msg: {verdict} target {r['target']:,.0f}"
        )
    print(f"load average {report['machine']['load_avg_1m']} on {report['machine']['cpus']} CPUs -> {results}")
    return 0 if all(r["meets_target"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
