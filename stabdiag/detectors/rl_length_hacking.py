"""rl-length-hacking (SD703): completions grow to the length cap as the reward rises with them.

What it detects
    The mean completion length (``rl/length/mean``: TRL ``completions/mean_length``, verl
    ``response_length/mean``) rising to the cap (the largest ``rl/length/max`` seen, i.e. TRL's
    ``max_completion_length``) or the truncated share (``rl/length/clipped_ratio``) rising towards 1,
    together with a reward that rises in step with the length (rank correlation >= ``min_corr``).
    A run whose completions are mostly truncated while the reward does not follow the length gets
    an ``info`` finding instead: no hacking, but the cap cuts most answers.

Why it matters
    A reward model or a reward function that pays for length (more steps, more keywords, more
    format tokens) is gamed: the policy learns to talk until it is cut off. Truncated completions
    have no end and, unless masked, still get the reward of a truncated answer, which trains the
    policy to never stop.

How it is computed
    Early levels are medians of the first 5 % of points (at least 3: length hacking can set in
    within a few dozen steps), late levels of the last 20 %. Length "reached the
    cap" when its late level is at least ``near_cap`` (90 %) of the cap and rose by at least
    ``min_rise`` (20 %) of the cap; the truncated share "saturated" when its late level is at
    least ``clipped`` (0.5) and rose by at least 0.3. With either, and a length-reward rank
    correlation >= 0.6 with the reward rising, it is ``warning`` (``error`` when the truncated
    share ends >= 0.9).

Known false positives
    Tasks where longer answers are genuinely better (chain-of-thought maths early in training)
    show length and reward rising together below the cap: that is why the cap or truncation must
    be reached as well.

References
    Singhal et al. 2023, "A Long Way to Go: Investigating Length Correlations in RLHF",
    arXiv:2310.03716; Yu et al. 2025 (DAPO), arXiv:2503.14476, section 3.4 (overlong filtering /
    soft punishment); TRL ``GRPOConfig.mask_truncated_completions``.
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

CODE, KIND = "SD703", "rl-length-hacking"


@dataclass(frozen=True, kw_only=True)
class Config:
    """Thresholds of the rl-length-hacking check (``[tool.stabdiag.detectors.rl-length-hacking]``)."""

    near_cap: float = 0.90
    """The completion length reached the cap when its late level (median of the last 20 %) is at
    least this share (90 %) of the cap ..."""
    min_rise: float = 0.20
    """... and rose by at least this share (20 %) of the cap from its early level: a task whose
    answers are always long does not count."""
    clipped: float = 0.50
    """The truncated share saturated when its late level is at least this (half of all completions
    cut at the cap) ..."""
    clipped_rise: float = 0.30
    """... and rose by at least this much (0.3) from its early level."""
    min_corr: float = 0.60
    """With either, the length and the rising reward must move together (rank correlation at least
    0.6): the reward pays for length."""


DEFAULT = Config()


def check(run: RunData, cfg: Config = DEFAULT) -> list[Finding] | Skipped:
    if not rc.is_rl(run):
        return []
    s = rc.need(run, rc.LENGTH)
    if isinstance(s, str):
        return DETECTOR.skipped(run, s)
    v, steps = s.values, s.steps
    mx = rc.finite(run, rc.LENGTH_MAX)
    cap = float(np.max(mx.values)) if mx is not None else float(np.max(v))
    l0, l1 = rc.head(v, 0.05), rc.tail(v, 0.2)
    at_cap = cap > 0 and l1 >= cfg.near_cap * cap and (l1 - l0) >= cfg.min_rise * cap
    c = rc.finite(run, rc.CLIPPED)
    c0 = c1 = None
    sat = False
    if c is not None and len(c) >= rc.MIN_POINTS:
        c0, c1 = rc.head(c.values, 0.05), rc.tail(c.values, 0.2)
        sat = c1 >= cfg.clipped and (c1 - c0) >= cfg.clipped_rise
    rs = rc.reward_series(run)
    corr = r0 = r1 = None
    if rs is not None:
        _, rw = rs
        _, a, b = rc.aligned(s, rw)
        if len(a) >= rc.MIN_POINTS:
            corr = rc.rank_corr(a, b)
            r0, r1 = rc.head(b, 0.05), rc.tail(b, 0.2)
    ev = {
        "length_early": l0,
        "length_late": l1,
        "cap": cap,
        "clipped_early": c0,
        "clipped_late": c1,
        "length_reward_corr": corr,
        "reward_early": r0,
        "reward_late": r1,
    }
    together = corr is not None and np.isfinite(corr) and corr >= cfg.min_corr and r1 > r0
    if (at_cap or sat) and together:
        sev = Severity.ERROR if c1 is not None and c1 >= 0.9 else Severity.WARNING
        sm = rc.smooth(v)
        i = st.first_index(sm >= l0 + 0.5 * (l1 - l0), 0)
        start = int(steps[max(i, 0)])
        what = []
        if at_cap:
            what.append(f"mean length {st.fmt(l0)} -> {st.fmt(l1)} of a {st.fmt(cap)}-token cap")
        if sat:
            what.append(f"truncated share {st.pct(c0)} -> {st.pct(c1)}")
        msg = (
            f"length hacking: {'; '.join(what)}, while the reward rose with the length "
            f"({st.fmt(r0)} -> {st.fmt(r1)}, rank correlation {corr:.2f})."
        )
        return [
            finding(
                CODE,
                KIND,
                run,
                severity=sev,
                metric=rc.LENGTH,
                step_start=start,
                step_end=int(steps[-1]),
                message=msg,
                evidence=ev,
            )
        ]
    if c1 is not None and c1 >= cfg.clipped:
        msg = (
            f"{st.pct(c1)} of completions end truncated at the {st.fmt(cap)}-token cap (late median); "
            "the reward does not follow the length, so this is a cap that cuts answers, not length hacking."
        )
        return [
            finding(
                CODE,
                KIND,
                run,
                severity=Severity.INFO,
                metric=rc.CLIPPED,
                step_start=int(c.steps[0]),
                step_end=int(c.steps[-1]),
                message=msg,
                evidence={**ev, "truncation_only": True},
            )
        ]
    return []


DETECTOR = Detector(
    code=CODE,
    kind=KIND,
    summary="RL: completions grow to the length cap with the reward",
    doc=__doc__ or "",
    check=check,
    config=Config,
)
