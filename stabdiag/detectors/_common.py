"""Small helpers every detector shares: building a Finding with plain evidence, reading series."""

from __future__ import annotations

from typing import Any

import numpy as np

from stabdiag.detectors._stats import plain
from stabdiag.findings import Finding, Severity
from stabdiag.table import TRAIN_LOSS, VAL_LOSS, RunData, Series


def finding(
    code: str,
    kind: str,
    run: RunData,
    *,
    severity: Severity,
    metric: str,
    step_start: int | None,
    step_end: int | None,
    message: str,
    evidence: dict[str, Any],
) -> Finding:
    """A Finding whose evidence is guaranteed JSON-able (numpy scalars converted, NaN -> None)."""
    return Finding(
        code=code,
        kind=kind,
        severity=severity,
        run=run.name,
        metric=metric,
        step_start=None if step_start is None else int(step_start),
        step_end=None if step_end is None else int(step_end),
        message=message,
        evidence=plain(evidence),
    )


def usable(run: RunData, metric: str, min_finite: int = 1) -> Series | None:
    """The series if it has at least ``min_finite`` finite values, else None."""
    s = run.get(metric)
    if s is None or int(np.isfinite(s.values).sum()) < min_finite:
        return None
    return s


def loss_metric(run: RunData) -> str:
    """The canonical loss to judge: ``train/loss``, else ``val/loss`` (a run that logs only a
    validation loss is judged on it rather than left unjudged)."""
    return TRAIN_LOSS if run.get(TRAIN_LOSS) is not None or run.get(VAL_LOSS) is None else VAL_LOSS
