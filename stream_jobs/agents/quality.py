"""The quality and silence timer of the per-device job.

Quality minutes normally close when a device's next minute starts (in
:mod:`stream_jobs.device`); this timer closes them for devices that fell quiet, and runs the
timer detectors (``silent``) against the time of each device's partition (the median of its
devices' latest device times, moved on by the wall time elapsed since the partition last got
data, so a partition that went quiet still sees time pass). Scores go to ``device.quality``,
signals to the alert lifecycle.
"""

from __future__ import annotations

import logging

from stream_jobs.agents.dedup import DeviceJob
from stream_jobs.app import Jobs
from stream_jobs.runtime import guarded

logger = logging.getLogger(__name__)

STATS_EVERY_S = 60.0


def install(jobs: Jobs, devices: DeviceJob) -> None:
    async def tick() -> None:
        async with devices.lock:
            await guarded("device timer", devices.tick())

    async def stats() -> None:
        logger.info("stream jobs: %s", jobs.stats.line())

    jobs.app.timer(jobs.settings.jobs.timer_interval_s, name="device-quality")(tick)
    jobs.app.timer(STATS_EVERY_S, name="stats")(stats)
