"""nonfinite (SD001): NaN or Inf in the loss or the gradient norm, outside fp16 overflow skips.

What it detects
    Non-finite values in ``train/loss``, ``val/loss`` and ``train/grad_norm``. One finding per
    metric with the first step, the count and the fraction of log points affected.

Why it matters
    A NaN loss means the weights (or the batch) are already broken; everything after it is suspect.
    Many stacks hide it (HF ``logging_nan_inf_filter``, Megatron omitting the loss field), so a
    NaN that does reach the log is important evidence.

How it is computed
    In an fp16 run (the loss scale varies, or ``train/skipped_step`` is logged and non-zero), a
    non-finite grad norm at a step the scaler skipped (skipped_step > 0, or the scale dropped within
    one log interval) is routine overflow handling and left to fp16-overflow. Severity:
    a non-finite loss is ``error``. A non-finite grad norm outside an overflow skip is ``error``,
    except when it is isolated (<= ``isolated_max`` = 2 points, < 1 % of points) and the loss stays
    finite and does not rise afterwards: then ``warning`` (the step was most likely dropped or
    clipped away, but nothing guarantees that the update was skipped). A non-finite validation loss
    is ``error`` too.

Known false positives
    Logs that print ``nan`` for "not computed" (e.g. a grad norm placeholder before the first
    optimiser step) look like real NaNs; readers should map those to missing values.

References
    OLMo-core trainer (non-finite loss raises); Megatron NaN/Inf check (on by default); HF
    ``logging_nan_inf_filter`` hiding NaNs (huggingface/trl #6702); epfLLM/Megatron-LLM #33.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stabdiag.detectors import _stats as st
from stabdiag.detectors._common import finding
from stabdiag.detectors.base import Detector
from stabdiag.detectors.fp16_overflow import is_fp16_run, overflow_steps
from stabdiag.findings import Finding, Severity, Skipped
from stabdiag.table import GRAD_NORM, TRAIN_LOSS, VAL_LOSS, RunData

CODE, KIND = "SD001", "nonfinite"


@dataclass(frozen=True, kw_only=True)
class Config:
    """Thresholds of the nonfinite check (``[tool.stabdiag.detectors.nonfinite]``)."""

    isolated_max: int = 2
    """A non-finite grad norm at no more than this many log points is a warning, not an error,
    when it is also rare (``isolated_frac``) and the loss stays finite and does not rise after it:
    the update was most likely dropped or clipped away. In an fp16 run it is info."""
    isolated_frac: float = 0.01
    """... and fewer than this share (1 %) of the grad-norm log points are non-finite."""
    rise_after: float = 1.5
    """The loss counts as rising after the last non-finite grad norm (and the finding stays an
    error) when the median of the 20 log points after it is above this multiple of the median of
    the 20 before it."""


DEFAULT = Config()


def _loss_healthy_after(run: RunData, step: int, cfg: Config) -> bool:
    s = run.get(TRAIN_LOSS)
    if s is None:
        return False
    after = s.values[s.steps > step]
    before = s.values[s.steps < step]
    if not after.size or not np.isfinite(after).all():
        return False
    b = st.nanmedian(before[-20:]) if before.size else np.nan
    a = st.nanmedian(after[:20])
    return not (np.isfinite(b) and b > 0 and a > cfg.rise_after * b)


def check(run: RunData, cfg: Config = DEFAULT) -> list[Finding] | Skipped:
    present = [m for m in (TRAIN_LOSS, VAL_LOSS, GRAD_NORM) if run.get(m) is not None]
    if not present:
        return DETECTOR.skipped(run, f"no {TRAIN_LOSS}, {VAL_LOSS} or {GRAD_NORM} series")
    out: list[Finding] = []
    fp16 = is_fp16_run(run)
    for metric in present:
        s = run.get(metric)
        bad = ~np.isfinite(s.values)
        excused = 0
        if metric == GRAD_NORM and fp16 and bad.any():
            ov = overflow_steps(run)
            tol = st.log_interval(s.steps)
            skip = bad & st.near(s.steps, ov, tol)
            excused = int(skip.sum())
            bad &= ~skip
        n = int(bad.sum())
        if not n:
            continue
        steps = s.steps[bad]
        frac = n / len(s.values)
        kinds = sorted(
            {"nan" if np.isnan(v) else ("+inf" if v > 0 else "-inf") for v in s.values[bad][:1000]}
        )
        sev = Severity.ERROR
        note = ""
        if (
            metric == GRAD_NORM
            and n <= cfg.isolated_max
            and frac < cfg.isolated_frac
            and _loss_healthy_after(run, int(steps[-1]), cfg)
        ):
            sev, note = Severity.WARNING, "; the loss stayed finite and healthy afterwards"
            if fp16:  # an fp16 run: these are steps the loss scaler skipped, not a numerics failure
                sev, note = (
                    Severity.INFO,
                    (
                        "; the loss stayed finite and healthy: in an fp16 run these are "
                        "overflow steps the loss scaler skipped"
                    ),
                )
        name = {TRAIN_LOSS: "training loss", VAL_LOSS: "validation loss", GRAD_NORM: "grad norm"}[
            metric
        ]
        msg = (
            f"{name} was non-finite ({'/'.join(kinds)}) at {n} of {len(s.values)} log points "
            f"({st.pct(frac)}), first at step {int(steps[0])}{note}."
        )
        out.append(
            finding(
                CODE,
                KIND,
                run,
                severity=sev,
                metric=metric,
                step_start=int(steps[0]),
                step_end=int(steps[-1]),
                message=msg,
                evidence={
                    "first_step": int(steps[0]),
                    "last_step": int(steps[-1]),
                    "count": n,
                    "fraction": frac,
                    "values": kinds,
                    "steps": st.steps_list(steps),
                    "fp16_run": fp16,
                    "excused_overflow_points": excused,
                },
            )
        )
    return out


DETECTOR = Detector(
    code=CODE,
    kind=KIND,
    summary="NaN/Inf in loss or grad norm (outside fp16 overflow skips)",
    doc=__doc__ or "",
    check=check,
    config=Config,
)
