"""attention-logit-growth (SD401): the max attention logit grows without bound.

What it detects
    ``train/max_attn_logit`` that grew by orders of magnitude to an absurd level (>= ``tau``,
    Megatron's QK-clip threshold 100), whether it is still rising or levelled off; or that is
    still rising well above the healthy range.

Why it matters
    Unbounded attention logits collapse attention entropy to one-hot and precede divergence at high
    LR (Wortsman et al. 2023; Dehghani et al. ViT-22B). QK-norm or QK-clip stops it. A logit that
    reached 1e4 and then levelled off (a cosine LR decaying) is just as broken as a rising one:
    the attention saturated; levelling off is no all-clear.

How it is computed
    early = median of the first 10 % of finite |values| (or of the first ``first_points`` (3)
    values, if lower: a logit can blow up within the first 10 %), late = median of the last 10 %,
    previous = median of the 10 % before that, peak = highest centred rolling median (window n/20,
    >= 3). Still rising: late >= previous x ``rising`` (1.05). ``error`` when late >= ``tau`` (100)
    and late >= ``huge_growth`` (10) x early, rising or not; or when still rising past tau having
    grown >= 2x. ``warning`` when the peak reached tau after growing >= ``huge_growth`` x but the end
    came back below it, or when still rising with late >= ``growth`` (5) x early and late >=
    ``min_level`` (30, above the healthy 5-30 of a small transformer without QK-norm).
    Still rising raises confidence (it is in the message and evidence) but is not required. The
    finding starts where the smoothed logit first crossed ``tau`` (or ``huge_growth`` x its early
    level, if that is lower).
    Needs ``min_points`` (20) finite points, except when the logit overflowed: a series that turns
    Inf/NaN after at least ``min_overflow_points`` (3) finite values that reached ``tau`` (or
    ``min_level`` after growing ``huge_growth`` x) is an ``error`` however short it is (fp16 attention scores overflowing is the
    end point of this growth).

Known false positives
    Models with no QK-norm naturally sharpen attention early in training (from ~0.1 at init to
    5-30); ``min_level`` and ``tau`` keep that quiet. Logits of a model trained with a very low
    softmax temperature legitimately sit higher.

References
    Wortsman et al. 2023 (arXiv 2309.14322) small-scale proxies; Dehghani et al. 2023 (ViT-22B);
    Megatron ``qk_clip_threshold=100`` and ``log_max_attention_logit``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stabdiag.detectors import _stats as st
from stabdiag.detectors._common import finding, usable
from stabdiag.detectors.base import Detector
from stabdiag.findings import Finding, Severity, Skipped
from stabdiag.table import MAX_ATTN_LOGIT, RunData

CODE, KIND = "SD401", "attention-logit-growth"


@dataclass(frozen=True, kw_only=True)
class Config:
    """Thresholds of the attention-logit-growth check
    (``[tool.stabdiag.detectors.attention-logit-growth]``)."""

    min_points: int = 20
    """Finite max-attention-logit points needed, except for a series that overflowed."""
    growth: float = 5.0
    """A logit still rising at the end that grew at least this much (5x its early level) and is
    above ``min_level`` is a warning."""
    huge_growth: float = 10.0
    """Growth (10x the early level) that makes a logit above ``tau`` an error, or a warning when
    its peak passed ``tau`` but the end came back below it."""
    min_level: float = 30.0
    """Below this the logit is ordinary: a small transformer without QK-norm sharpens its attention
    from about 0.1 at init to 5-30 while healthy."""
    tau: float = 100.0
    """The level where logit growth is trouble: Megatron's QK-clip threshold
    (``qk_clip_threshold`` = 100) rescales Q and K above it."""
    rising: float = 1.05
    """Still rising: the median of the last 10 % of points is at least this multiple (5 % up) of
    the 10 % before it."""
    min_overflow_points: int = 3
    """A series that turns Inf/NaN after at least this many finite values that reached ``tau`` (or
    ``min_level`` after growing ``huge_growth`` x) is an error however short it is."""
    first_points: int = 3
    """The early level is also the median of the first 3 values, if lower than that of the first
    10 %: a logit can blow up within the first 10 % of the log."""


DEFAULT = Config()


def overflowed(run: RunData, cfg: Config) -> list[Finding]:
    """An error when finite logits that had grown large are followed by Inf/NaN."""
    s = run.get(MAX_ATTN_LOGIT)
    if s is None:
        return []
    ok = np.isfinite(s.values)
    if ok.sum() < cfg.min_overflow_points or ok.all():
        return []
    first_bad = int(np.argmin(ok[int(np.argmax(ok)) :])) + int(np.argmax(ok))
    x = np.abs(s.values[:first_bad][ok[:first_bad]])
    if len(x) < cfg.min_overflow_points or ok[first_bad]:
        return []
    top = float(x.max())
    start = float(np.median(x[: max(1, len(x) // 10)]))
    if not (
        top >= cfg.tau or (top >= cfg.min_level and start > 0 and top >= cfg.huge_growth * start)
    ):
        return []
    step = int(s.steps[first_bad])
    return [
        finding(
            CODE,
            KIND,
            run,
            severity=Severity.ERROR,
            metric=MAX_ATTN_LOGIT,
            step_start=int(s.steps[0]),
            step_end=step,
            message=(
                f"max attention logit grew from {st.fmt(start)} to {st.fmt(top)} and then overflowed "
                f"(non-finite from step {step})."
            ),
            evidence={
                "early_level": start,
                "max_finite": top,
                "overflow_step": step,
                "finite_points": int(ok.sum()),
                "tau": cfg.tau,
            },
        )
    ]


def check(run: RunData, cfg: Config = DEFAULT) -> list[Finding] | Skipped:
    s = usable(run, MAX_ATTN_LOGIT, cfg.min_points)
    if s is None:
        over = overflowed(run, cfg)
        if over:
            return over
        return DETECTOR.skipped(
            run, f"no {MAX_ATTN_LOGIT} series with {cfg.min_points} finite points"
        )
    ok = np.isfinite(s.values)
    steps, x = s.steps[ok], np.abs(s.values[ok])
    early, prev, late = st.thirds_levels(x)
    # A logit that blew up inside the first 10 % (a high LR from step 0) still grew from its init
    # level: the first logged values are the start, not the median of an already-grown stretch.
    early = min(early, float(np.median(x[: cfg.first_points])))
    smooth = st.rolling_median(x, max(3, len(x) // 20) | 1, center=True)
    pk = int(np.nanargmax(smooth))
    peak = float(smooth[pk])
    rising = late >= cfg.rising * prev
    grown = (lambda level: level >= cfg.huge_growth * early) if early > 0 else (lambda level: True)
    factor = late / early if early > 0 else None
    if late >= cfg.tau and (grown(late) or (rising and (factor is None or factor >= 2))):
        sev = Severity.ERROR
    elif (peak >= cfg.tau and grown(peak)) or (
        rising and late >= cfg.min_level and (factor is None or factor >= cfg.growth)
    ):
        sev = Severity.WARNING
    else:
        return []
    grew = f"{factor:.0f}x " if factor and factor >= 10 else (f"{factor:.1f}x " if factor else "")
    if late >= cfg.tau or not peak >= cfg.tau:
        trend = "and was still rising" if rising else "and levelled off there"
        msg = (
            f"max attention logit grew {grew}(from {st.fmt(early)} at the start to {st.fmt(late)} over the "
            f"last 10% of points, medians, computed; highest value {st.fmt(float(np.max(x)))}) {trend} at "
            f"step {int(steps[-1])}"
        )
    else:
        msg = (
            f"max attention logit grew to {st.fmt(peak)} at step {int(steps[pk])} ({st.fmt(early)} at the "
            f"start) before coming back to {st.fmt(late)}"
        )
    msg += f", past the QK-clip threshold {cfg.tau:g}." if max(late, peak) >= cfg.tau else "."
    # Onset: where the smoothed logit first crossed tau (or 10x its early level, if lower).
    bar = min(cfg.tau, cfg.huge_growth * early) if early > 0 else cfg.tau
    crossed = np.flatnonzero(smooth >= bar)
    onset = int(steps[crossed[0]]) if crossed.size else int(steps[0])
    return [
        finding(
            CODE,
            KIND,
            run,
            severity=sev,
            metric=MAX_ATTN_LOGIT,
            step_start=onset,
            step_end=int(steps[-1]),
            message=msg,
            evidence={
                "onset_step": onset,
                "early_level": early,
                "late_level": late,
                "previous_level": prev,
                "growth": factor,
                "still_rising": rising,
                "peak_level": peak,
                "peak_step": int(steps[pk]),
                "max": float(np.max(x)),
                "tau": cfg.tau,
            },
        )
    ]


DETECTOR = Detector(
    code=CODE,
    kind=KIND,
    summary="max attention logit grows without bound",
    doc=__doc__ or "",
    check=check,
    config=Config,
)
