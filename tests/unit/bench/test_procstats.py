"""Parsing /proc/<pid>/stat and status, and summing process trees."""

from __future__ import annotations

from bench.procstats import ProcStat, descendants, parse_stat, parse_status, tree_sample

# A real line of /proc/<pid>/stat (fields 14-17: utime stime cutime cstime, field 24: rss pages).
STAT = (
    "16057 (java) S 1 16056 16056 0 -1 1077936192 341453 0 12 0 11530 1371 7 3 20 0 74 0 "
    "103912 18094411776 254894 18446744073709551615 1 1 0 0 0 0 0 4096 16800975 0 0 0 17 1 0 0 0 0 0"
)
STATUS = """Name:\tmosquitto
State:\tS (sleeping)
Pid:\t16034
PPid:\t1
VmPeak:\t  109028 kB
VmHWM:\t  102688 kB
VmRSS:\t  100352 kB
Threads:\t1
"""


def stat(
    pid: int, ppid: int, cpu: float, *, rss: int = 4096, state: str = "S", children: float = 0.0
) -> ProcStat:
    return ProcStat(pid, ppid, f"p{pid}", state, cpu, children, rss)


def test_parse_stat_reads_cpu_and_rss() -> None:
    s = parse_stat(STAT, clk_tck=100, page_size=4096)
    assert s is not None
    assert (s.pid, s.ppid, s.name, s.state) == (16057, 1, "java", "S")
    assert s.cpu_s == (11530 + 1371) / 100
    assert s.children_cpu_s == (7 + 3) / 100
    assert s.rss_bytes == 254894 * 4096


def test_parse_stat_with_spaces_and_parentheses_in_the_name() -> None:
    line = STAT.replace("(java)", "(python3 -m (odd) name)")
    s = parse_stat(line, clk_tck=100, page_size=4096)
    assert s is not None
    assert s.name == "python3 -m (odd) name"
    assert s.cpu_s == 129.01


def test_parse_stat_refuses_short_or_broken_lines() -> None:
    assert parse_stat("") is None
    assert parse_stat("123 (x) S 1 2 3") is None
    assert parse_stat("abc (x) " + " ".join(["0"] * 30)) is None


def test_parse_status_memory_lines_in_bytes() -> None:
    parsed = parse_status(STATUS)
    assert parsed == {"VmPeak": 109028 * 1024, "VmHWM": 102688 * 1024, "VmRSS": 100352 * 1024}


def test_descendants_walks_the_tree_only_below_the_root() -> None:
    table = {p.pid: p for p in (stat(10, 1, 1), stat(11, 10, 1), stat(12, 11, 1), stat(20, 1, 1))}
    assert descendants(10, table) == [10, 11, 12]
    assert descendants(99, table) == []


def test_tree_sample_sums_cpu_counts_reaped_children_and_skips_zombie_memory() -> None:
    table = {
        10: stat(10, 1, 2.0, rss=1000, children=0.5),
        11: stat(11, 10, 1.0, rss=500),
        12: stat(12, 10, 0.25, rss=700, state="Z"),
        20: stat(20, 1, 9.0, rss=9000),
    }
    sample = tree_sample([10], table)
    assert sample.cpu_s == 2.0 + 0.5 + 1.0 + 0.25
    assert sample.rss_bytes == 1500
    assert sample.processes == 3
    both = tree_sample([10, 11, 20], table)
    assert both.processes == 4  # 11 is counted once although it is a root and a child
    assert both.cpu_s == 3.75 + 9.0
