"""rl-value-divergence (SD707): the PPO critic explains nothing, or its loss explodes.

What it detects
    verl ``critic/vf_explained_var`` below 0 for the last ``late_frac`` (25 %) of the run (the
    critic predicts returns worse than their mean), or the value loss (verl ``critic/vf_loss``,
    TRL PPO ``loss/value_avg``, OpenRLHF ``critic_loss``) growing ``growth`` (10x) or more above
    its lowest level and ending there.

Why it matters
    PPO's advantages are returns minus the critic's values (GAE). A critic with negative explained
    variance adds noise instead of removing it, and an exploding value loss drags the shared or
    separate value head into large gradients; either makes the policy updates worse than no
    baseline at all. Critic-free methods (GRPO, RLOO) do not log these series and are not judged.

How it is computed
    Explained variance: median of the last 25 % of points below 0 -> ``warning``, below -1 ->
    ``error`` (the critic is worse than predicting the mean by more than the returns' variance).
    Value loss: the late level (median of the last 20 %) over the lowest rolling-median level
    before it; >= 10x -> ``warning``, >= 100x -> ``error``.

Known false positives
    The first steps of a fresh critic (random value head) have negative explained variance; only
    the late part of the run counts, and verl's ``critic_warmup`` steps are logged before the
    policy moves.

References
    Schulman et al. 2016 (GAE), arXiv:1506.02438; Huang et al. 2022, "The 37 implementation
    details of PPO" (explained variance as the critic's health signal); verl PPO metrics docs.
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

CODE, KIND = "SD707", "rl-value-divergence"


@dataclass(frozen=True, kw_only=True)
class Config:
    """Thresholds of the rl-value-divergence check (``[tool.stabdiag.detectors.rl-value-divergence]``)."""

    late_frac: float = 0.25
    """The critic's explained variance is judged on the median of this last share (25 %) of the
    run: below 0 is a warning (worse than predicting the mean return)."""
    error_ev: float = -1.0
    """An explained variance below this is an error: the critic's error exceeds the returns' own
    variance."""
    growth: float = 10.0
    """A value loss whose late level (last 20 %) is this many times (10x) its lowest earlier level
    is a warning ..."""
    severe_growth: float = 100.0
    """... and an error at 100x."""


DEFAULT = Config()


def check(run: RunData, cfg: Config = DEFAULT) -> list[Finding] | Skipped:
    if not rc.is_rl(run):
        return []
    ev_s, vl_s = rc.finite(run, rc.EXPLAINED_VAR), rc.finite(run, rc.VALUE_LOSS)
    if ev_s is None and vl_s is None:
        return DETECTOR.skipped(
            run, "no critic series (critic-free method such as GRPO/RLOO, or not logged)"
        )
    usable = [s for s in (ev_s, vl_s) if s is not None and len(s) >= rc.MIN_POINTS]
    if not usable:
        return DETECTOR.skipped(run, f"fewer than {rc.MIN_POINTS} critic points")
    out: list[Finding] = []
    if ev_s is not None and len(ev_s) >= rc.MIN_POINTS:
        k = max(3, int(len(ev_s) * cfg.late_frac))
        late = st.nanmedian(ev_s.values[-k:])
        if late < 0:
            sev = Severity.ERROR if late < cfg.error_ev else Severity.WARNING
            msg = (
                f"the critic's explained variance is {st.fmt(late)} over the last {st.pct(cfg.late_frac)} of "
                f"the run: its values predict the returns worse than their mean."
            )
            out.append(
                finding(
                    CODE,
                    KIND,
                    run,
                    severity=sev,
                    metric=rc.EXPLAINED_VAR,
                    step_start=int(ev_s.steps[-k]),
                    step_end=int(ev_s.steps[-1]),
                    message=msg,
                    evidence={
                        "explained_var_late": late,
                        "explained_var_best": float(np.max(ev_s.values)),
                    },
                )
            )
    if vl_s is not None and len(vl_s) >= rc.MIN_POINTS:
        v = vl_s.values
        sm = rc.smooth(v)
        late = rc.tail(v, 0.2)
        k = max(3, len(v) // 5)
        body = sm[:-k] if len(sm) > k else sm
        low = float(np.nanmin(body)) if np.isfinite(body).any() else np.nan
        if np.isfinite(low) and low > 0 and late / low >= cfg.growth:
            i_low = int(np.nanargmin(body))
            sev = Severity.ERROR if late / low >= cfg.severe_growth else Severity.WARNING
            onset_i = st.first_index(sm >= low * cfg.growth**0.5, i_low)
            onset = int(vl_s.steps[max(onset_i, i_low)])
            msg = (
                f"the value loss grew {st.fmt(late / low)}x, from {st.fmt(low)} (step {int(vl_s.steps[i_low])}) "
                f"to {st.fmt(late)} at the end."
            )
            out.append(
                finding(
                    CODE,
                    KIND,
                    run,
                    severity=sev,
                    metric=rc.VALUE_LOSS,
                    step_start=onset,
                    step_end=int(vl_s.steps[-1]),
                    message=msg,
                    evidence={"value_loss_low": low, "value_loss_late": late, "growth": late / low},
                )
            )
    return out


DETECTOR = Detector(
    code=CODE,
    kind=KIND,
    summary="RL: PPO critic explains nothing or its loss explodes",
    doc=__doc__ or "",
    check=check,
    config=Config,
)
