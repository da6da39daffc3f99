"""Helpers shared by the top-level tests: repository paths and in-memory runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stabdiag.table import RunData, Series

REPO = Path(__file__).resolve().parents[1]
REAL_LOGS = (REPO / ".." / "shared" / "real_logs").resolve()
SAMPLE_RUNS = REPO / "sample_runs"


def make_run(name: str = "r", **series: tuple[np.ndarray, np.ndarray]) -> RunData:
    """RunData from keyword series: metric names use '__' for '/' (train__loss -> train/loss)."""
    return RunData(name=name, series={k.replace("__", "/"): Series(np.asarray(s, dtype=np.int64),
                                                                    np.asarray(v, dtype=float))
                                      for k, (s, v) in series.items()})
