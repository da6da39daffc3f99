"""Shared fixtures: where the real logs live, and helpers to build runs in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stabdiag.table import RunData, Series

REPO = Path(__file__).resolve().parents[1]
REAL_LOGS = (REPO / ".." / "shared" / "real_logs").resolve()
SAMPLE_RUNS = REPO / "sample_runs"


@pytest.fixture
def real_logs() -> Path:
    if not REAL_LOGS.is_dir():
        pytest.skip("../shared/real_logs is not present (a user's clone has none)")
    return REAL_LOGS


def make_run(name: str = "r", **series: tuple[np.ndarray, np.ndarray]) -> RunData:
    """RunData from keyword series: metric names use '__' for '/' (train__loss -> train/loss)."""
    return RunData(name=name, series={k.replace("__", "/"): Series(np.asarray(s, dtype=np.int64),
                                                                    np.asarray(v, dtype=float))
                                      for k, (s, v) in series.items()})
