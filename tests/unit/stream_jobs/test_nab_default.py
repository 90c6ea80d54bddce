from __future__ import annotations

import json
from pathlib import Path

from cli.main import build_parser
from stream_jobs.evaluation.corpus import resolve_nab_dir


def test_the_default_detector_scores_at_least_60_on_the_nab_standard_profile(
    tmp_path: Path, capsys: object
) -> None:
    out = tmp_path / "nab.json"
    args = build_parser().parse_args(
        ["evaluate", "nab", "--nab-dir", str(resolve_nab_dir()), "--json", str(out)]
    )
    assert args.func(args) == 0
    report = json.loads(out.read_text())
    profiles = report["profiles"]
    assert report["detector"] == "nab"
    assert report["files"] == 58
    assert report["invalid_scores"] == 0
    assert profiles["standard"]["score"] >= 60.0
    # The other two profiles of the same run, to keep an eye on the trade-off.
    assert profiles["reward_low_FP_rate"]["score"] >= 50.0
    assert profiles["reward_low_FN_rate"]["score"] >= 60.0
