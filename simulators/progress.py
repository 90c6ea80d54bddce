"""A live progress bar (rich) with the current rate; plain log lines when not on a terminal."""

from __future__ import annotations

import logging
import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress

from simulators.publisher import Progress

logger = logging.getLogger(__name__)

LOG_EVERY_S = 5.0


class ProgressDisplay:
    """Use as a context manager; pass :meth:`update` as the publisher's ``on_progress``."""

    def __init__(self, description: str, total: int, *, enabled: bool = True) -> None:
        self.description = description
        self.total = total
        self.console = Console(stderr=True)
        self.live = enabled and self.console.is_terminal
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None
        self._next_log = 0.0
        self.enabled = enabled

    def __enter__(self) -> ProgressDisplay:
        if self.live:
            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>9,.0f} msg/s"),
                TextColumn("failed {task.fields[failed]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total, rate=0.0, failed=0)
        return self

    def update(self, p: Progress) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, total=p.total, completed=p.done, rate=p.rate, failed=p.failed)
            return
        now = time.monotonic()
        if self.enabled and now >= self._next_log:
            self._next_log = now + LOG_EVERY_S
            logger.info(
                "%s: %d/%d sent, %.0f msg/s, %d failed, %.1f s",
                self.description,
                p.done,
                p.total,
                p.rate,
                p.failed,
                p.elapsed_s,
            )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
