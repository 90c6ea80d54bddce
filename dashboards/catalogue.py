"""The dashboards, and how to turn them into Grafana JSON in each language."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from dashboards import alerts, city, device, district, pipeline, shared
from dashboards.panels import LANGUAGES, Board, Lang

Json = dict[str, Any]


@dataclass(frozen=True)
class Spec:
    uid: str
    file: str
    title: tuple[str, str]
    """(English, Korean)."""
    description: tuple[str, str]
    build: Callable[[str, Board], None]
    refresh: str = "30s"


DASHBOARDS: tuple[Spec, ...] = (
    Spec(
        shared.CITY,
        "city.json",
        ("City overview", "도시 개요"),
        (
            "Seoul's 25 districts by air quality, open alerts, readings per second, devices online.",
            "서울 25개 자치구의 대기질, 미해결 경고, 초당 측정값, 온라인 장치.",
        ),
        city.build,
    ),
    Spec(
        shared.DISTRICT,
        "district.json",
        ("District", "자치구"),
        (
            "One district and sensor type: aggregates over time, its devices and their quality.",
            "자치구와 센서 종류별 집계 추이, 장치 목록과 품질.",
        ),
        district.build,
    ),
    Spec(
        shared.DEVICE,
        "device.json",
        ("Device", "장치"),
        (
            "One device: raw readings against the district aggregate, quality, alerts as annotations.",
            "장치별 측정값과 자치구 평균 비교, 품질 점수, 경고 주석.",
        ),
        device.build,
    ),
    Spec(
        shared.ALERTS,
        "alerts.json",
        ("Alerts", "경고"),
        (
            "Open alerts with age and acknowledgement, history, noisiest rules.",
            "미해결 경고의 경과 시간과 확인 여부, 이력, 가장 잦은 규칙.",
        ),
        alerts.build,
    ),
    Spec(
        shared.PIPELINE,
        "pipeline.json",
        ("Pipeline health", "파이프라인 상태"),
        (
            "Messages per second per stage, dead letters, consumer lag, latency per hop, CPU and memory.",
            "단계별 초당 메시지, 데드레터, 컨슈머 지연, 구간별 지연, CPU와 메모리.",
        ),
        pipeline.build,
        refresh="10s",
    ),
)


def language(value: str) -> Lang:
    """A supported language code (``en`` or ``ko``); raises ``ValueError`` otherwise."""
    for lang in LANGUAGES:
        if value == lang:
            return lang
    raise ValueError(f"unsupported language {value!r} (choose from {', '.join(LANGUAGES)})")


def render(spec: Spec, lang: Lang, buckets: tuple[str, str]) -> Json:
    """One dashboard as Grafana JSON."""
    board = Board(spec.uid, lang, buckets)
    spec.build(lang, board)
    title_en, title_ko = spec.title
    title = f"CityStream · {board.t(title_en, title_ko)}"
    dash = board.build(title, board.t(*spec.description), spec.refresh)
    data: Json = json.loads(json.dumps(dash.build(), cls=JSONEncoder, ensure_ascii=False))
    return data


def render_all(lang: Lang, buckets: tuple[str, str]) -> dict[str, Json]:
    """File name -> dashboard JSON, for every dashboard in one language."""
    return {spec.file: render(spec, lang, buckets) for spec in DASHBOARDS}


def dump(data: Json) -> str:
    """The canonical text of a dashboard file (stable, so a stale file is easy to detect)."""
    return json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
