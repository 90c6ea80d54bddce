"""Running the bridge as a service: start, wait for SIGINT/SIGTERM, shut down gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal

from citystream.errors import CitystreamError
from citystream.settings import Settings
from ingest.bridge import Bridge

logger = logging.getLogger(__name__)


async def run_bridge(settings: Settings) -> int:
    """Run one bridge until SIGINT or SIGTERM; exit code 0 after a graceful shutdown."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bridge = Bridge(settings)
    starting = loop.create_task(bridge.start())
    stopping = loop.create_task(stop.wait())
    done, _ = await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    try:
        if starting in done:
            starting.result()  # raises when MQTT refused the ingest user
            await stop.wait()
        else:
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
        logger.info("shutting down: delivering and acknowledging what is in flight")
    except CitystreamError:
        await bridge.stop()
        raise
    finally:
        stopping.cancel()
    await bridge.stop()
    return 0
