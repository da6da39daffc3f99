"""rl-clip-saturation (SD705): the PPO/GRPO ratio clip is hit by a large share of tokens for long.

What it detects
    ``rl/clipfrac`` (TRL ``clip_ratio/region_mean``, verl ``actor/pg_clipfrac``, OpenRLHF
    ``ppo_clip_ratio``, old TRL PPO ``policy/clipfrac_avg``) whose rolling median stays at or above
    ``high`` (0.2) for at least ``min_frac`` (20 %) of the run. It says which side is clipped when
    TRL logs ``clip_ratio/low_mean`` and ``clip_ratio/high_mean``.

Why it matters
    The clip bounds how far one update may move the policy from the one that sampled the batch.
    When a large share of tokens sits at the clip, the update has outrun the data (LR too high,
    too many iterations per batch): the clipped tokens give no gradient, so the effective batch
    shrinks, and a saturated upper clip stops low-probability tokens from growing, which is how
    DAPO explains entropy collapse.

How it is computed
    Rolling median over ~10 % of the points; the longest stretch at or above ``high`` must cover
    ``min_frac`` of the run: ``warning`` (``error`` when its median is at or above ``severe``, 0.4).
    Benign and never a finding: a clip fraction of 0 when updates are on-policy (TRL's default one
    iteration per batch makes the ratio exactly 1). With several iterations per batch the first,
    on-policy one logs exactly 0: such points are left out when they are under 60 % of the run.

Known false positives
    Very small batches make the clip fraction noisy; the rolling median and the duration
    requirement keep single high points from counting.

References
    Schulman et al. 2017 (PPO), arXiv:1707.06347 (epsilon 0.2); Yu et al. 2025 (DAPO),
    arXiv:2503.14476, section 3.1 (clip-higher, epsilon_high 0.28); Huang et al. 2022, "The 37
    implementation details of PPO" (clipfrac as a health signal).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stabdiag.detectors import _stats as st
from stabdiag.detectors import rl_common as rc
from stabdiag.detectors._common import finding
from stabdiag.detectors.base import Detector
from stabdiag.findings import Finding, Severity, Skipped
from stabdiag.table import RunData

CODE, KIND = "SD705", "rl-clip-saturation"


@dataclass(frozen=True, kw_only=True)
class Config:
    """Thresholds of the rl-clip-saturation check (``[tool.stabdiag.detectors.rl-clip-saturation]``)."""

    high: float = 0.20
    """A clip fraction whose rolling median is at or above this (a fifth of the tokens at the ratio
    clip) is saturated: the update outran the data."""
    severe: float = 0.40
    """A saturated stretch whose median is at or above this is an error."""
    min_frac: float = 0.20
    """The longest saturated stretch must cover this share (20 %) of the run to be a finding."""


DEFAULT = Config()


def _side_mean(run: RunData, metric: str, at: np.ndarray) -> float | None:
    """Mean of one side's clip fraction over the given steps (the judged, off-policy ones)."""
    s = rc.finite(run, metric)
    if s is None:
        return None
    v = s.values[np.isin(s.steps, at)]
    return float(np.mean(v)) if len(v) else None


def check(run: RunData, cfg: Config = DEFAULT) -> list[Finding] | Skipped:
    if not rc.is_rl(run):
        return []
    s = rc.need(run, rc.CLIPFRAC)
    if isinstance(s, str):
        return DETECTOR.skipped(run, s)
    v, steps = s.values, s.steps
    if not np.any(v > 0):
        return []  # on-policy updates: the ratio is 1, nothing to clip
    # With several iterations per batch (TRL num_iterations, verl ppo_epochs) the first update of
    # each batch is on-policy and logs exactly 0; those points say nothing about clipping pressure.
    on_policy = v == 0
    if on_policy.mean() < 0.6:
        steps, v = steps[~on_policy], v[~on_policy]
    if len(v) < rc.MIN_POINTS:
        return []
    sm = rc.smooth(v, max(3, len(v) // 10 | 1))
    a, b = rc.longest_run(sm >= cfg.high)
    if a < 0:
        return []
    frac = (b - a + 1) / len(v)
    if frac < cfg.min_frac:
        return []
    med = st.nanmedian(v[a : b + 1])
    sev = Severity.ERROR if med >= cfg.severe else Severity.WARNING
    lo_m = _side_mean(run, rc.CLIP_LOW, steps[a : b + 1])
    hi_m = _side_mean(run, rc.CLIP_HIGH, steps[a : b + 1])
    side = ""
    if lo_m is not None and hi_m is not None and lo_m + hi_m > 0:
        which = (
            "upper (ratio > 1 + epsilon_high)" if hi_m >= lo_m else "lower (ratio < 1 - epsilon)"
        )
        side = f"; mostly the {which} side ({st.pct(hi_m)} high vs {st.pct(lo_m)} low)"
    msg = (
        f"{st.pct(med)} of tokens hit the ratio clip (median) for {st.pct(frac)} of the run, "
        f"steps {int(steps[a])}-{int(steps[b])}{side}."
    )
    return [
        finding(
            CODE,
            KIND,
            run,
            severity=sev,
            metric=rc.CLIPFRAC,
            step_start=int(steps[a]),
            step_end=int(steps[b]),
            message=msg,
            evidence={
                "median_clipfrac": med,
                "fraction": frac,
                "clip_low_mean": lo_m,
                "clip_high_mean": hi_m,
                "peak": float(np.max(v)),
            },
        )
    ]


DETECTOR = Detector(
    code=CODE,
    kind=KIND,
    summary="RL: ratio clip hit by many tokens for long",
    doc=__doc__ or "",
    check=check,
    config=Config,
)
