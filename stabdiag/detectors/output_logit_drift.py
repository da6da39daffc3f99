"""output-logit-drift (SD402): the output log-partition log Z drifts steadily away from its start.

What it detects
    ``train/output_logz`` (mean log-sum-exp of the output logits) moving far from its early level
    and still moving the same way over the last part of the run.

Why it matters
    Without z-loss, log Z drifts (typically to large negative values) late in training and the
    softmax loses precision; PaLM and Wortsman et al. add z-loss 1e-4 * log^2 Z to pin it near 0.

How it is computed
    early = median of the first 10 % of finite points, late = median of the last 10 %, previous =
    median of the 10 % before that. drift = late - early (nats). Fires when |drift| >= ``warn_drift``
    (5 nats) and the last segment still moves in the drift direction by >= ``still`` (0.5 nat);
    ``error`` when |drift| >= ``error_drift`` (20 nats) or |late| >= ``error_abs`` (50).
    Needs ``min_points`` (20) finite points.

Known false positives
    At initialisation log Z is about ln(vocab) (~10.8 for GPT-2); a healthy model moves it by a few
    nats early on, which the early median and the still-moving condition absorb.

References
    PaLM (arXiv 2204.02311) z-loss 1e-4; Wortsman et al. 2023 (arXiv 2309.14322) output-logit
    divergence; OLMo-core ``z_loss_multiplier`` (1e-4 default, 1e-5 in recipes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stabdiag.detectors import _stats as st
from stabdiag.detectors._common import finding, usable
from stabdiag.detectors.base import Detector
from stabdiag.findings import Finding, Severity, Skipped
from stabdiag.table import OUTPUT_LOGZ, RunData

CODE, KIND = "SD402", "output-logit-drift"


@dataclass(frozen=True, kw_only=True)
class Config:
    """Thresholds of the output-logit-drift check (``[tool.stabdiag.detectors.output-logit-drift]``)."""

    min_points: int = 20
    """Finite output log-Z points needed to judge a drift; fewer are "not checked"."""
    warn_drift: float = 5.0
    """Drift of the output log-Z (median of the last 10 % minus that of the first 10 %) of at least
    this many nats is a warning; a healthy model moves it by a few nats early on."""
    error_drift: float = 20.0
    """A drift of at least this many nats is an error."""
    error_abs: float = 50.0
    """So is an end level this far from zero (|log Z| >= 50): z-loss keeps log Z near 0 (PaLM,
    Wortsman et al. 2023)."""
    still: float = 0.5
    """The drift must still be going: the last 10 % moved at least this many nats further in its
    direction than the 10 % before it."""


DEFAULT = Config()


def check(run: RunData, cfg: Config = DEFAULT) -> list[Finding] | Skipped:
    s = usable(run, OUTPUT_LOGZ, cfg.min_points)
    if s is None:
        return DETECTOR.skipped(run, f"no {OUTPUT_LOGZ} series with {cfg.min_points} finite points")
    ok = np.isfinite(s.values)
    steps, x = s.steps[ok], s.values[ok]
    early, prev, late = st.thirds_levels(x)
    drift = late - early
    moving = (late - prev) * np.sign(drift) >= cfg.still
    if abs(drift) < cfg.warn_drift or not moving:
        return []
    sev = (
        Severity.ERROR
        if abs(drift) >= cfg.error_drift or abs(late) >= cfg.error_abs
        else Severity.WARNING
    )
    msg = (
        f"output log Z drifted {drift:+.1f} nats ({st.fmt(early)} -> {st.fmt(late)}) and was still "
        f"moving at step {int(steps[-1])}: z-loss territory."
    )
    return [
        finding(
            CODE,
            KIND,
            run,
            severity=sev,
            metric=OUTPUT_LOGZ,
            step_start=int(steps[0]),
            step_end=int(steps[-1]),
            message=msg,
            evidence={
                "early_level": early,
                "late_level": late,
                "previous_level": prev,
                "drift": drift,
            },
        )
    ]


DETECTOR = Detector(
    code=CODE,
    kind=KIND,
    summary="output log Z drifts steadily away from its start",
    doc=__doc__ or "",
    check=check,
    config=Config,
)
