"""attention-logit-growth (SD401): the max attention logit grows without bound.

What it detects
    ``train/max_attn_logit`` that ends far above its early level and is still rising over the last
    part of the run.

Why it matters
    Unbounded attention logits collapse attention entropy to one-hot and precede divergence at high
    LR (Wortsman et al. 2023; Dehghani et al. ViT-22B). QK-norm or QK-clip stops it.

How it is computed
    early = median of the first 10 % of finite points, late = median of the last 10 %, previous =
    median of the 10 % before that. Still rising: late >= previous x ``rising`` (1.05). Fires when
    still rising and (late >= ``growth`` (5) x early or late >= ``tau`` (100, Megatron's QK-clip
    threshold)). ``error`` when late >= tau and it grew >= 2x; otherwise ``warning``.
    Needs ``min_points`` (20) finite points.

Known false positives
    Models with no QK-norm naturally sharpen attention early in training; the 10 % windows and the
    still-rising condition keep a logit that grew then levelled off quiet.

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
    min_points: int = 20
    growth: float = 5.0
    tau: float = 100.0
    rising: float = 1.05


DEFAULT = Config()


def check(run: RunData, cfg: Config = DEFAULT) -> list[Finding] | Skipped:
    s = usable(run, MAX_ATTN_LOGIT, cfg.min_points)
    if s is None:
        return DETECTOR.skipped(run, f"no {MAX_ATTN_LOGIT} series with {cfg.min_points} finite points")
    ok = np.isfinite(s.values)
    steps, x = s.steps[ok], np.abs(s.values[ok])
    early, prev, late = st.thirds_levels(x)
    if not (late >= cfg.rising * prev and (late >= cfg.growth * early or late >= cfg.tau)):
        return []
    factor = late / early if early > 0 else None
    sev = Severity.ERROR if late >= cfg.tau and (factor is None or factor >= 2) else Severity.WARNING
    grew = f"{factor:.1f}x " if factor else ""
    msg = (f"max attention logit grew {grew}({st.fmt(early)} -> {st.fmt(late)}) and was still rising "
           f"at step {int(steps[-1])}" + (f", past the QK-clip threshold {cfg.tau:g}." if late >= cfg.tau else "."))
    return [finding(
        CODE, KIND, run, severity=sev, metric=MAX_ATTN_LOGIT, step_start=int(steps[0]),
        step_end=int(steps[-1]), message=msg,
        evidence={"early_level": early, "late_level": late, "previous_level": prev,
                  "growth": factor, "max": float(np.max(x)), "tau": cfg.tau},
    )]


DETECTOR = Detector(code=CODE, kind=KIND, summary="max attention logit grows without bound",
                    doc=__doc__ or "", check=check)
