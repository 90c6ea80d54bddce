"""Dashboard variables and Grafana's Flux macros, substituted the way Grafana does it.

Grafana replaces ``$name``, ``${name}``, ``${name:format}`` and ``[[name]]`` with the
variable's value, and its InfluxDB datasource replaces ``v.timeRangeStart``,
``v.timeRangeStop`` and ``v.windowPeriod`` textually (RFC 3339 times and a Go duration)
before the query reaches InfluxDB. Doing the same here lets every panel query run outside
Grafana against the real InfluxDB.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime

VARIABLE = re.compile(
    r"\$\{(?P<braced>[A-Za-z_]\w*)(?P<suffix>[.:][^}]*)?\}"
    r"|\$(?P<plain>[A-Za-z_]\w*)"
    r"|\[\[(?P<old>[A-Za-z_]\w*)(?::[^\]]*)?\]\]"
)
BUILTIN_PREFIX = "__"
"""Grafana's global and data-link variables (``$__interval``, ``${__value.raw}``, ...)."""


def is_builtin(name: str) -> bool:
    return name.startswith(BUILTIN_PREFIX)


def variables_used(text: str) -> set[str]:
    """Names of the dashboard variables ``text`` refers to (Grafana's own left out)."""
    names = set()
    for m in VARIABLE.finditer(text):
        name = m.group("braced") or m.group("plain") or m.group("old")
        if name and not is_builtin(name):
            names.add(name)
    return names


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Replace dashboard variables by their values; raises ``KeyError`` for an unknown one."""

    def value(m: re.Match[str]) -> str:
        name = m.group("braced") or m.group("plain") or m.group("old")
        if is_builtin(name):
            return m.group(0)
        return values[name]

    return VARIABLE.sub(value, text)


def go_duration(seconds: int) -> str:
    """``seconds`` as Go's ``time.Duration.String`` writes it (``1m0s``), which Flux accepts."""
    if seconds <= 0:
        raise ValueError("the window period must be positive")
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}h" if hours else ""
    if hours or minutes:
        text += f"{minutes}m"
    return f"{text}{secs}s"


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def interpolate(
    text: str, values: Mapping[str, str], *, start: datetime, stop: datetime, window_s: int
) -> str:
    """The query Grafana would send for ``text``, with these variable values and time range."""
    flux = substitute(text, values)
    flux = flux.replace("v.timeRangeStart", rfc3339(start))
    flux = flux.replace("v.timeRangeStop", rfc3339(stop))
    return flux.replace("v.windowPeriod", go_duration(window_s))
