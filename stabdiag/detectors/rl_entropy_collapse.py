"""rl-entropy-collapse (SD702): the policy's entropy falls to a small fraction of its start early on.

What it detects
    ``rl/entropy`` (TRL ``entropy``, verl ``actor/entropy``, OpenRLHF ``policy_entropy``) whose
    trend falls below ``collapsed`` (10 %) of its starting level, or is falling steadily towards it:
    then the finding says at which step it will reach that floor at the current slope.

Why it matters
    Entropy is the policy's exploration budget. Cui et al. 2025 ("The Entropy Mechanism of
    Reinforcement Learning for Reasoning Language Models") find that in RL for LLMs entropy drops
    sharply early and performance follows R = -a exp(H) + b: once entropy is spent, the reward
    stops improving - most of the gain is made while entropy is consumed, and a collapsed policy
    no longer samples the alternatives it would need to learn from. GRPO with ``beta`` = 0 and a
    sharp reward is the classic way to get there.

How it is computed
    The start is the median of the first 10 % of points, the trend a centred rolling median. The
    first step where the trend is below ``collapsed`` x start is the collapse; reaching it within
    the first ``early`` (50 %) of the run is ``error``, later ``warning``. A trend that has lost
    at least ``falling`` (50 %) of its start without collapsing yet is projected along the slope
    of its last third: if it would reach the floor within another run length and the reward has
    stopped rising over that third (rank correlation with time < 0.3), ``warning`` with the
    projected step. Entropy spent while the reward still climbs is the trade the law describes. Entropy that is 0 from the start (not computed) is not judged.

Known false positives
    Tasks with one right answer (exact-match maths) lower entropy legitimately as the policy
    becomes sure; judge together with the reward: a collapse with the reward still rising is
    mostly harmless until the reward stalls.

References
    Cui et al. 2025, arXiv:2505.22617 (entropy-performance law, Clip-Cov/KL-Cov); Yu et al. 2025
    (DAPO), arXiv:2503.14476, section 3.1 (entropy collapse under symmetric clipping).
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

CODE, KIND = "SD702", "rl-entropy-collapse"


@dataclass(frozen=True, kw_only=True)
class Config:
    """Thresholds of the rl-entropy-collapse check (``[tool.stabdiag.detectors.rl-entropy-collapse]``)."""

    collapsed: float = 0.10
    """The entropy has collapsed when its trend falls below this share (10 %) of its start."""
    falling: float = 0.50
    """A trend that lost at least this share (half) of its start without collapsing yet is projected
    along its recent slope, and warned about when it would collapse within another run length while
    the reward has stopped rising."""
    early: float = 0.50
    """A collapse within this share (the first half) of the run is an error, later a warning:
    the entropy was spent before the reward could use it (Cui et al. 2025, arXiv:2505.22617)."""


DEFAULT = Config()


def _reward_rising(run: RunData, since: int) -> bool:
    """True when the reward still climbs after ``since``: entropy is being spent on progress."""
    rs = rc.reward_series(run)
    if rs is None:
        return False
    r = rs[1]
    late = r.values[r.steps >= since]
    if len(late) < 5:
        return False
    corr = rc.rank_corr(np.arange(len(late), dtype=np.float64), late)
    return bool(np.isfinite(corr) and corr >= cfg_rising)


cfg_rising = 0.3  # rank correlation of the late reward with time that counts as "still rising"


def check(run: RunData, cfg: Config = DEFAULT) -> list[Finding] | Skipped:
    if not rc.is_rl(run):
        return []
    s = rc.need(run, rc.ENTROPY)
    if isinstance(s, str):
        return DETECTOR.skipped(run, s)
    v, steps = s.values, s.steps
    n = len(v)
    start = rc.head(v, 0.1)
    if not np.isfinite(start) or start <= 1e-6:
        return DETECTOR.skipped(run, "entropy is 0 from the start (not computed)")
    sm = rc.smooth(v)
    floor = cfg.collapsed * start
    i = st.first_index(sm < floor, 0)
    end = rc.tail(v, 0.1)
    ev = {"entropy_start": start, "entropy_end": end, "floor": floor}
    if i >= 0:
        frac_run = (steps[i] - steps[0]) / max(steps[-1] - steps[0], 1)
        sev = Severity.ERROR if frac_run <= cfg.early else Severity.WARNING
        msg = (
            f"entropy collapsed: its trend fell below {st.pct(cfg.collapsed)} of its start "
            f"({st.fmt(start)} -> {st.fmt(floor)}) at step {int(steps[i])}, {st.pct(frac_run)} into "
            f"the run, and ends at {st.fmt(end)}."
        )
        return [
            finding(
                CODE,
                KIND,
                run,
                severity=sev,
                metric=rc.ENTROPY,
                step_start=int(steps[i]),
                step_end=int(steps[-1]),
                message=msg,
                evidence={**ev, "collapse_step": int(steps[i]), "run_fraction": frac_run},
            )
        ]
    if end > (1 - cfg.falling) * start or _reward_rising(run, int(steps[-(n // 3 or 1)])):
        return []
    k = max(3, n // 3)
    x, y = steps[-k:].astype(np.float64), sm[-k:]
    ok = np.isfinite(y)
    if ok.sum() < 3:
        return []
    slope = float(np.polyfit(x[ok], y[ok], 1)[0])
    if slope >= 0:
        return []
    at = int(steps[-1] + (y[ok][-1] - floor) / -slope)
    horizon = int(steps[-1] + (steps[-1] - steps[0]))
    if at > horizon:
        return []
    msg = (
        f"entropy is falling fast: {st.fmt(start)} -> {st.fmt(end)} ({st.pct(1 - end / start)} lost); "
        f"at the current slope ({st.fmt(slope)} per step) it reaches {st.pct(cfg.collapsed)} of its "
        f"start ({st.fmt(floor)}) at about step {at}."
    )
    return [
        finding(
            CODE,
            KIND,
            run,
            severity=Severity.WARNING,
            metric=rc.ENTROPY,
            step_start=int(steps[-k]),
            step_end=int(steps[-1]),
            message=msg,
            evidence={**ev, "slope_per_step": slope, "projected_floor_step": at},
        )
    ]


DETECTOR = Detector(
    code=CODE,
    kind=KIND,
    summary="RL: policy entropy collapses early",
    doc=__doc__ or "",
    check=check,
    config=Config,
)
