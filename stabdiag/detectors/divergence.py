"""divergence (SD102): the loss rises and does not come back, or ends above where it started.

What it detects
    A run whose robust end level of the training loss is well above the best level it reached, or
    above its start. Separately, a validation loss that rises while the training loss keeps falling
    is reported as ``info`` overfitting (not divergence).

Why it matters
    A diverged run wastes every step after the onset; the fix (rewind to before the onset, lower the
    LR, longer warm-up) depends on knowing where it began. Overfitting needs early stopping, not a
    stability fix, so the two must not be confused.

How it is computed
    Levels are medians, never single points: start = median of the first 5 % of finite points,
    end = median of the last 10 %, best = minimum of a centred rolling median (window n/50, >= 5).
    Noise guard: end - best must exceed ``noise_sigmas`` (3) x the MAD-sigma of the points around
    the smoothed trend (or of successive differences, whichever is larger) and ``min_rel_rise``
    (5 %) of the best level, with >= ``min_points`` (30) points, so noisy-but-healthy curves (diffusion
    losses) and quantised near-zero losses do not fire. A run that never improved beyond that
    guard is judged only by its end vs its start. ``error`` when the end is above the start,
    or when >= ``error_lost`` (50 %) of the improvement start -> best has been given back;
    ``warning`` when >= ``warn_lost`` (25 %). Onset = the last point where the smoothed loss was
    still within half of the rise above the best. The early warm-up rise cannot fire because the
    start level is a median and the end level is measured over the last 10 %.

Known false positives
    Runs whose objective legitimately rises: a curriculum that gets harder, a loss-weight or
    data-mixture schedule, RL objectives. Without train/loss the rule is applied to val/loss.

References
    llm-foundry KillLossSpike "high loss" rule (half the window above a cap); Lightning EarlyStopping
    ``divergence_threshold``; stabdiag peers review (trainproof's false "End loss 0.000 vs Min 0.000"
    on a quantised loss; runmedic's false divergence on a noisy diffusion loss).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stabdiag.detectors import _stats as st
from stabdiag.detectors._common import finding
from stabdiag.detectors.base import Detector
from stabdiag.findings import Finding, Severity, Skipped
from stabdiag.table import TRAIN_LOSS, VAL_LOSS, RunData, Series

CODE, KIND = "SD102", "divergence"


@dataclass(frozen=True, kw_only=True)
class Config:
    min_points: int = 30
    start_frac: float = 0.05
    end_frac: float = 0.10
    noise_sigmas: float = 3.0
    min_rel_rise: float = 0.05
    warn_lost: float = 0.25
    error_lost: float = 0.50
    val_min_points: int = 3
    val_min_rise: float = 0.05


DEFAULT = Config()


def _train_rule(run: RunData, s: Series, metric: str, cfg: Config) -> list[Finding]:
    ok = np.isfinite(s.values)
    steps, x = s.steps[ok], s.values[ok]
    n = len(x)
    if n < cfg.min_points:
        return []
    w = max(5, n // 50) | 1
    smooth = st.cached(s.values, ("trend", w), lambda: st.rolling_median(x, w, center=True))
    start = float(np.median(x[: max(5, int(cfg.start_frac * n))]))
    end_k = max(5, int(cfg.end_frac * n))
    end = float(np.median(x[-end_k:]))
    half = w // 2   # centred windows are partial at both edges: keep them out of "best"
    bi = half + int(np.argmin(smooth[half:n - half]))
    if bi >= n - end_k:
        return []   # the best level is in the end window: nothing was given back
    best = float(smooth[bi])
    # Point noise around the trend, whole run: residuals from the smoothed curve (shrunk a little
    # by the median tracking noise) or successive differences, whichever is larger.
    noise = max(st.robust_sigma(x - smooth),
                st.DIFF_TO_SIGMA * float(np.median(np.abs(np.diff(x)))))
    rise = end - best
    guard = max(cfg.noise_sigmas * noise, cfg.min_rel_rise * abs(best))
    if rise <= guard:
        return []
    improvement = start - best
    if improvement < guard:   # never improved beyond noise: "best" is a noise dip
        if end - start < guard:
            return []
        improvement = 0.0
    lost = rise / improvement if improvement > 0 else float("inf")
    above_start = end > start + (guard if improvement <= 0 else 0.0)
    if not above_start and lost < cfg.warn_lost:
        return []
    sev = Severity.ERROR if above_start or lost >= cfg.error_lost else Severity.WARNING
    after = np.flatnonzero(smooth[bi:] <= best + 0.5 * rise)
    onset_i = bi + int(after[-1]) + 1 if after.size else bi
    onset_i = min(onset_i, n - 1)
    how = (f"ends above where it started ({st.fmt(start)} -> best {st.fmt(best)} -> {st.fmt(end)})"
           if above_start else
           f"gave back {100 * lost:.0f}% of its improvement ({st.fmt(start)} -> best {st.fmt(best)} "
           f"at step {int(steps[bi])} -> {st.fmt(end)} at the end)")
    name = "training loss" if metric == TRAIN_LOSS else "validation loss"
    msg = f"{name} rose from step {int(steps[onset_i])} and did not come back: it {how}."
    return [finding(
        CODE, KIND, run, severity=sev, metric=metric, step_start=int(steps[onset_i]),
        step_end=int(steps[-1]), message=msg,
        evidence={"start_level": start, "best_level": best, "best_step": int(steps[bi]),
                  "end_level": end, "onset_step": int(steps[onset_i]),
                  "fraction_of_improvement_lost": None if improvement <= 0 else lost,
                  "ends_above_start": above_start, "noise_sigma": noise},
    )]


def _overfit_rule(run: RunData, cfg: Config) -> list[Finding]:
    v, t = run.get(VAL_LOSS), run.get(TRAIN_LOSS)
    if v is None or t is None:
        return []
    ok = np.isfinite(v.values)
    vs, vx = v.steps[ok], v.values[ok]
    if len(vx) < cfg.val_min_points:
        return []
    bi = int(np.argmin(vx))
    vend = float(vx[-1])
    if bi == len(vx) - 1 or vend < (1 + cfg.val_min_rise) * vx[bi]:
        return []
    tf = np.isfinite(t.values)
    ts, tx = t.steps[tf], t.values[tf]
    at_best = st.nanmedian(tx[(ts <= vs[bi])][-5:])
    t_end = st.nanmedian(tx[-5:])
    if not (np.isfinite(at_best) and np.isfinite(t_end) and t_end <= at_best):
        return []  # train loss rising too: the train rule speaks for it
    msg = (f"validation loss rose {st.fmt(float(vx[bi]))} -> {st.fmt(vend)} after step {int(vs[bi])} while "
           f"the training loss kept falling ({st.fmt(at_best)} -> {st.fmt(t_end)}): overfitting, not divergence.")
    return [finding(
        CODE, KIND, run, severity=Severity.INFO, metric=VAL_LOSS, step_start=int(vs[bi]),
        step_end=int(vs[-1]), message=msg,
        evidence={"overfitting": True, "best_val_loss": float(vx[bi]), "best_val_step": int(vs[bi]),
                  "final_val_loss": vend, "train_loss_at_best_val": at_best, "final_train_loss": t_end},
    )]


def check(run: RunData, cfg: Config = DEFAULT) -> list[Finding] | Skipped:
    t, v = run.get(TRAIN_LOSS), run.get(VAL_LOSS)
    base = t if t is not None else v
    if base is None:
        return DETECTOR.skipped(run, f"no {TRAIN_LOSS} or {VAL_LOSS} series")
    if np.isfinite(base.values).sum() < cfg.min_points and (v is None or t is None):
        name = TRAIN_LOSS if t is not None else VAL_LOSS
        return DETECTOR.skipped(run, f"{name} has too few finite points ({cfg.min_points} needed)")
    out = _train_rule(run, base, TRAIN_LOSS if t is not None else VAL_LOSS, cfg)
    return out + _overfit_rule(run, cfg)


DETECTOR = Detector(code=CODE, kind=KIND, summary="loss rises and does not come back, or ends above its start",
                    doc=__doc__ or "", check=check, config=Config)
