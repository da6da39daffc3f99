"""Helpers shared by the top-level tests: repository paths, in-memory runs and findings."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stabdiag.findings import Finding, Severity
from stabdiag.table import RunData, Series

REPO = Path(__file__).resolve().parents[1]
REAL_LOGS = (REPO / ".." / "shared" / "real_logs").resolve()
SAMPLE_RUNS = REPO / "sample_runs"


def make_run(name: str = "r", **series: tuple[np.ndarray, np.ndarray]) -> RunData:
    """RunData from keyword series: metric names use '__' for '/' (train__loss -> train/loss)."""
    return RunData(
        name=name,
        series={
            k.replace("__", "/"): Series(np.asarray(s, dtype=np.int64), np.asarray(v, dtype=float))
            for k, (s, v) in series.items()
        },
    )


def finding(kind: str, sev: Severity, at: int, **evidence: object) -> Finding:
    """A one-step finding of run "r" on the training loss, its message naming kind and step."""
    return Finding(
        code="SDx",
        kind=kind,
        severity=sev,
        run="r",
        metric="train/loss",
        step_start=at,
        step_end=at,
        message=f"{kind} at {at}",
        evidence=dict(evidence),
    )
