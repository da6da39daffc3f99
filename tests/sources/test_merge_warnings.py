"""Comparing runs logged twice says nothing on stderr about values past float32's range."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from stabdiag.sources import load


def test_runs_with_values_past_float32_are_compared_without_a_numpy_warning(
    tmp_path: Path,
) -> None:
    values = [1e39 * (k + 1) for k in range(6)]  # float32 overflows: np.float32(v) is inf
    (tmp_path / "a.csv").write_text(
        "step,loss\n" + "".join(f"{s},{v!r}\n" for s, v in enumerate(values))
    )
    (tmp_path / "b.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": v}) + "\n" for s, v in enumerate(values))
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning would reach the user's terminal
        got = load([tmp_path], cache=False)
    assert len(got.runs) == 1  # the same run, read once
    assert any("same run as" in w for w in got.runs[0].warnings)
