"""CPU seconds and resident memory of every process in the run, read from /proc.

A *role* is one part of the pipeline (``ingest``, ``jobs``, ``kafka``, ...) and maps to one or
more root pids; its figures cover each root and all of its descendants (a Quix Streams source
runs in a child process, a shell pipe has two roots). CPU time of a tree is ``utime + stime``
of every live member plus ``cutime + cstime`` (children that already exited and were waited
for), so a child that ends between two samples does not make its time vanish.

The long-running services (Mosquitto, the Kafka JVM, influxd) are found through their pid
files under ``settings.stack.state_dir``. They are shared with everything else on the machine,
so their deltas include whatever else used them during the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SERVICE_PID_FILES = {
    "mosquitto": "mosquitto/mosquitto.pid",
    "kafka": "kafka/kafka.pid",
    "influxd": "influxdb/influxd.pid",
}


class ProcStat(NamedTuple):
    pid: int
    ppid: int
    name: str
    state: str
    cpu_s: float
    """User plus system time of the process itself."""
    children_cpu_s: float
    """User plus system time of its children that exited and were waited for."""
    rss_bytes: int


def parse_stat(text: str, clk_tck: int = CLK_TCK, page_size: int = PAGE_SIZE) -> ProcStat | None:
    """One ``/proc/<pid>/stat`` line; ``None`` when it is cut short or unreadable.

    The command name (field 2) is in parentheses and may itself hold spaces and parentheses,
    so the fields are counted from the last ``)``.
    """
    head, sep, tail = text.rpartition(")")
    if not sep:
        return None
    pid_text, _, name = head.partition(" (")
    rest = tail.split()
    if len(rest) < 22 or not pid_text.strip().isdigit():
        return None
    try:
        utime, stime, cutime, cstime = (int(x) for x in rest[11:15])
        return ProcStat(
            pid=int(pid_text),
            ppid=int(rest[1]),
            name=name,
            state=rest[0],
            cpu_s=(utime + stime) / clk_tck,
            children_cpu_s=(cutime + cstime) / clk_tck,
            rss_bytes=int(rest[21]) * page_size,
        )
    except ValueError:
        return None


def parse_status(text: str) -> dict[str, int]:
    """The memory lines of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``, ...) in bytes."""
    out: dict[str, int] = {}
    for row in text.splitlines():
        key, sep, value = row.partition(":")
        parts = value.split()
        if sep and key.startswith("Vm") and len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            out[key] = int(parts[0]) * 1024
    return out


def read_pid_file(path: Path) -> int | None:
    """The pid in a pid file, ``None`` when it is missing or holds no pid."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def service_pids(state_dir: Path) -> dict[str, int]:
    """Pids of the local services that are running (pid file present and process alive)."""
    found: dict[str, int] = {}
    for role, rel in SERVICE_PID_FILES.items():
        pid = read_pid_file(state_dir / rel)
        if pid is not None and Path(f"/proc/{pid}").exists():
            found[role] = pid
    return found


def descendants(root: int, table: Mapping[int, ProcStat]) -> list[int]:
    """``root`` and every process below it in ``table`` (breadth first)."""
    children: dict[int, list[int]] = {}
    for stat in table.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    out: list[int] = []
    queue = [root] if root in table else []
    while queue:
        pid = queue.pop(0)
        out.append(pid)
        queue.extend(children.get(pid, ()))
    return out


class TreeSample(NamedTuple):
    cpu_s: float
    rss_bytes: int
    processes: int


def tree_sample(roots: Iterable[int], table: Mapping[int, ProcStat]) -> TreeSample:
    """CPU time and RSS summed over the trees below ``roots`` (zombies count CPU, not memory)."""
    cpu = 0.0
    rss = 0
    seen: set[int] = set()
    for root in roots:
        for pid in descendants(root, table):
            if pid in seen:
                continue
            seen.add(pid)
            stat = table[pid]
            cpu += stat.cpu_s + stat.children_cpu_s
            if stat.state not in ("Z", "X"):
                rss += stat.rss_bytes
    return TreeSample(cpu, rss, len(seen))


def snapshot(proc: Path = Path("/proc")) -> dict[int, ProcStat]:
    """Every process's stat line (processes that end while being read are skipped)."""
    table: dict[int, ProcStat] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        stat = parse_stat(text)
        if stat is not None:
            table[stat.pid] = stat
    return table


def peak_rss(pid: int, proc: Path = Path("/proc")) -> int | None:
    """``VmHWM`` of a live process: the most memory it ever held resident."""
    try:
        return parse_status((proc / str(pid) / "status").read_text()).get("VmHWM")
    except OSError:
        return None


@dataclass
class RoleUsage:
    """What one role used between :meth:`ProcMeter.start` and the last :meth:`ProcMeter.sample`."""

    cpu_start_s: float | None = None
    cpu_last_s: float = 0.0
    peak_rss_bytes: int = 0
    samples: list[tuple[float, float, int]] = field(default_factory=list)
    """(seconds since the start, CPU seconds used since the start, RSS bytes)."""

    @property
    def cpu_s(self) -> float:
        return 0.0 if self.cpu_start_s is None else max(0.0, self.cpu_last_s - self.cpu_start_s)


class ProcMeter:
    """Samples roles over a measurement window; each role's CPU is counted from :meth:`start`."""

    def __init__(self, roles: Mapping[str, Iterable[int]], proc: Path = Path("/proc")) -> None:
        self.roles = {name: tuple(pids) for name, pids in roles.items()}
        self.proc = proc
        self.usage = {name: RoleUsage() for name in self.roles}
        self.t0 = 0.0

    def add_role(self, name: str, pids: Iterable[int], now: float) -> None:
        """Track a role that starts after the window opened (its CPU counts from now)."""
        self.roles[name] = tuple(pids)
        usage = self.usage[name] = RoleUsage()
        sample = tree_sample(self.roles[name], snapshot(self.proc))
        usage.cpu_start_s = usage.cpu_last_s = sample.cpu_s
        usage.samples.append((now - self.t0, 0.0, sample.rss_bytes))

    def start(self, now: float) -> None:
        self.t0 = now
        table = snapshot(self.proc)
        for name, pids in self.roles.items():
            sample = tree_sample(pids, table)
            usage = self.usage[name] = RoleUsage(cpu_start_s=sample.cpu_s, cpu_last_s=sample.cpu_s)
            usage.peak_rss_bytes = sample.rss_bytes
            usage.samples.append((0.0, 0.0, sample.rss_bytes))

    def sample(self, now: float) -> None:
        table = snapshot(self.proc)
        for name, pids in self.roles.items():
            usage = self.usage[name]
            sample = tree_sample(pids, table)
            if sample.processes == 0:
                continue  # gone: keep the last figures
            if usage.cpu_start_s is None:
                usage.cpu_start_s = sample.cpu_s
            # A tree's CPU time only grows; a smaller figure means a member left unwaited.
            usage.cpu_last_s = max(usage.cpu_last_s, sample.cpu_s)
            usage.peak_rss_bytes = max(usage.peak_rss_bytes, sample.rss_bytes)
            usage.samples.append((now - self.t0, usage.cpu_s, sample.rss_bytes))

    def summary(self, messages: int) -> dict[str, dict[str, float]]:
        """Per role: CPU seconds, CPU seconds per million messages and peak RSS in MiB."""
        out: dict[str, dict[str, float]] = {}
        for name, usage in self.usage.items():
            cpu = usage.cpu_s
            out[name] = {
                "cpu_s": round(cpu, 3),
                "cpu_s_per_million": round(cpu / messages * 1e6, 2) if messages else 0.0,
                "peak_rss_mib": round(usage.peak_rss_bytes / 2**20, 1),
            }
        return out
