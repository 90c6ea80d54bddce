"""The run loop both sinks share: start, step until stopped, drain, close."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod

from citystream.settings import Settings


class ConsumerLoop(ABC):
    """A consuming process: ``run()`` until ``stop()``, then flush and commit what it holds."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Run until :meth:`stop`; on the way out, drain (flush and commit) and close."""
        try:
            await self._start()
            while not self._stopping.is_set():
                await self._step()
            await self._drain(self.settings.sink.revoke_timeout_s)
        finally:
            await self._close()

    @abstractmethod
    async def _start(self) -> None: ...

    @abstractmethod
    async def _step(self) -> None: ...

    @abstractmethod
    async def _drain(self, timeout_s: float) -> None: ...

    @abstractmethod
    async def _close(self) -> None: ...
