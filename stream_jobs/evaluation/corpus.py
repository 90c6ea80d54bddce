"""Reading the NAB corpus: data series, labelled windows, profiles and published results.

The corpus is data kept outside the repository (``<repo>/../shared/nab`` unless the setting
``evaluation.nab_dir`` says otherwise); nothing here copies it. Timestamps become epoch
milliseconds (UTC, as NAB's are naive), values floats.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from citystream.errors import ConfigError

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_NAB_DIR = REPO_ROOT.parent / "shared" / "nab"

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class Series(NamedTuple):
    """One data file of the corpus: ``name`` is its path under ``data/``."""

    name: str
    ts_ms: IntArray
    values: FloatArray


class Window(NamedTuple):
    """A labelled anomaly window, inclusive at both ends (epoch ms)."""

    start_ms: int
    end_ms: int


class CorpusError(ConfigError):
    """The NAB folder is missing or does not hold what the scorer needs."""


def resolve_nab_dir(override: Path | str | None = None) -> Path:
    """The NAB folder: an explicit path, else the setting, else ``<repo>/../shared/nab``."""
    if override is not None:
        return Path(override).expanduser()
    from citystream.settings import get_settings

    configured = get_settings().evaluation.nab_dir
    return configured.expanduser() if configured is not None else DEFAULT_NAB_DIR


def parse_times(texts: Sequence[str]) -> IntArray:
    """NAB timestamps (``2015-02-26 21:42:53`` with optional fraction) as epoch ms."""
    try:
        return np.array(texts, dtype="datetime64[ms]").astype(np.int64)
    except ValueError as exc:
        raise CorpusError(f"unreadable timestamp in {list(texts)[:3]}...: {exc}") from exc


class Corpus:
    """The files of one NAB folder, read lazily."""

    def __init__(self, root: Path) -> None:
        self.root = root
        if not (root / "data").is_dir() or not (root / "labels" / "combined_windows.json").is_file():
            raise CorpusError(f"{root} is not a NAB folder (need data/ and labels/combined_windows.json)")
        raw = _read_json(root / "labels" / "combined_windows.json")
        if not isinstance(raw, dict):
            raise CorpusError("labels/combined_windows.json is not an object")
        self.windows: dict[str, list[Window]] = {}
        for name, pairs in sorted(raw.items()):
            starts = parse_times([str(p[0]) for p in pairs])
            ends = parse_times([str(p[1]) for p in pairs])
            self.windows[name] = [Window(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]

    @property
    def names(self) -> list[str]:
        """The data files that have labels, in a stable order."""
        return list(self.windows)

    def series(self, name: str) -> Series:
        return read_series(self.root / "data" / name, name)

    def all_series(self) -> Iterator[Series]:
        for name in self.names:
            yield self.series(name)

    def profiles(self) -> dict[str, dict[str, float]]:
        """``{profile: {"tpWeight": .., "fpWeight": .., "fnWeight": ..}}`` from config/profiles.json."""
        raw = _read_json(self.root / "config" / "profiles.json")
        return {name: {k: float(v) for k, v in p["CostMatrix"].items()} for name, p in raw.items()}

    def published(self) -> dict[str, dict[str, float]]:
        """The scoreboard: ``{detector: {profile: score}}`` from results/final_results.json."""
        raw = _read_json(self.root / "results" / "final_results.json")
        return {d: {p: float(s) for p, s in scores.items()} for d, scores in raw.items()}

    def published_scores(self, detector: str, name: str) -> tuple[IntArray, FloatArray]:
        """The per-row ``anomaly_score`` column a published detector wrote for one file."""
        folder, _, base = name.rpartition("/")
        path = self.root / "results" / detector / folder / f"{detector}_{base}"
        times, columns = _read_csv(path, ("timestamp", "anomaly_score"))
        return parse_times(times), np.array(columns[0], dtype=np.float64)


def read_series(path: Path, name: str) -> Series:
    times, columns = _read_csv(path, ("timestamp", "value"))
    return Series(name, parse_times(times), np.array(columns[0], dtype=np.float64))


def _read_csv(path: Path, wanted: tuple[str, ...]) -> tuple[list[str], list[list[str]]]:
    try:
        with path.open(newline="") as f:
            reader = csv.reader(f)
            header = next(reader)
            idx = [header.index(col) for col in wanted]
            times: list[str] = []
            columns: list[list[str]] = [[] for _ in wanted[1:]]
            for row in reader:
                times.append(row[idx[0]])
                for col, i in zip(columns, idx[1:], strict=True):
                    col.append(row[i])
    except (OSError, StopIteration, ValueError, IndexError) as exc:
        raise CorpusError(f"cannot read {path}: {exc}") from exc
    return times, columns


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CorpusError(f"cannot read {path}: {exc}") from exc
