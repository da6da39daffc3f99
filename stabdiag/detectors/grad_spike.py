"""grad-spike (SD201): isolated gradient-norm outliers without sustained growth.

What it detects
    Single log points (or runs of at most ``max_points`` = 3) where the total gradient norm is far
    above the median of the points before it and then comes straight back. One finding per run
    summarises all of them: how many, where, how large, and whether the loss responded.

Why it matters
    Recurring grad-norm spikes are the early form of loss spikes (OLMo 2: grad-norm spikes precede
    loss spikes) and the cue for clipping or adaptive clipping. The healthy grad-norm percentiles in
    the evidence give a clip threshold derived from the run itself.

How it is computed
    Robust z of log(grad norm) against the median of the previous ``level_window`` (5) finite
    points, lag-corrected and scaled by the MAD of the previous ``window`` (100) residuals (the
    shared trend-robust baseline of loss-spike; sigma floored at 5 %, at least ``min_history`` = 8
    points first, successive differences give sigma until residuals exist, so spikes in the first
    tens of steps count). A spike point needs z >= ``z_threshold`` (7, the OLMo 2 spike-score
    threshold) AND grad norm >= ``min_ratio`` (3) x the baseline. A spike is isolated when its run of
    flagged points is at most ``max_points`` long AND the next point is back below ``min_ratio`` x
    the baseline at its onset; anything else (a step up that stays, growth) is grad-explosion's.
    Severity: ``warning`` when the loss responded, when there are >= ``repeated`` (3) spikes at
    >= ``frequent_per_10k`` (5) per 10k steps of the run, or one is >= ``large_ratio`` (30) x its
    baseline; otherwise ``info`` (a handful of clipped outliers in a long healthy run). "Loss responded" means a loss-spike event (the same
    events loss-spike reports) spans a grad spike's step +- one grad-norm log interval, or the loss
    at the same step (+- one log interval) was >= 5 % and 3 sigma above its own causal baseline.

Known false positives
    The first steps of training (large grad norm at init) are excluded by the warm-up. Runs that
    log the grad norm *before* clipping show spikes that clipping already handled; they are still
    reported, because the remedy (a clip threshold) is the same.

References
    ZClip (arXiv 2504.02507: EMA z-score, z 2.5, alpha 0.97, warm-up 25); OLMo-core
    StabilityMonitorCallback (6 sigma over 128); Megatron ``--check-for-large-grads`` (10x the max of
    the first 100 values); OLMo 2 (arXiv 2501.00656) spike score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stabdiag.detectors import _stats as st
from stabdiag.detectors import loss_spike
from stabdiag.detectors._common import finding, usable
from stabdiag.detectors.base import Detector
from stabdiag.findings import Finding, Severity, Skipped
from stabdiag.table import GRAD_NORM, TRAIN_LOSS, RunData

CODE, KIND = "SD201", "grad-spike"


@dataclass(frozen=True, kw_only=True)
class Config:
    """Thresholds of the grad-spike check (``[tool.stabdiag.detectors.grad-spike]``)."""

    level_window: int = 5
    """Log points before a point whose median is its local level (lag-corrected, as in loss-spike)."""
    window: int = 100
    """Previous residuals whose MAD is the noise sigma (OLMo-core's monitor uses 128 values)."""
    min_history: int = 8
    """Finite grad-norm points needed before a point is judged; fewer in the whole run are "not
    checked"."""
    z_threshold: float = 7.0
    """Robust z of log(grad norm) a spike point must reach: the OLMo 2 spike-score threshold
    (7 std, arXiv 2501.00656)."""
    sigma_floor: float = 0.05
    """Floor of the noise sigma relative to the level (5 %): grad norms are noisier than losses."""
    min_ratio: float = 3.0
    """A spike point is also at least this multiple of its baseline: 2x is within the heavy-tailed
    noise of a healthy grad norm."""
    max_points: int = 3
    """A spike lasts at most this many log points and the next point is back below ``min_ratio`` x
    the baseline; longer excursions and steps up are grad-explosion's."""
    repeated: int = 3
    """At least this many spikes ...  (with ``frequent_per_10k``) make the finding a warning."""
    frequent_per_10k: float = 5.0
    """... at a rate of at least 5 per 10k steps of the run; a handful of clipped outliers in a long
    healthy run stays info."""
    large_ratio: float = 30.0
    """One spike this large (30x its baseline) makes the finding a warning on its own."""


DEFAULT = Config()


def spike_points(values: np.ndarray, cfg: Config = DEFAULT) -> tuple[np.ndarray, np.ndarray]:
    """Indices of isolated spike points and each one's causal baseline (linear scale); cached."""
    return st.cached(values, ("grad-spike-points", cfg), lambda: _spike_points(values, cfg))


def _spike_points(values: np.ndarray, cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    x, logged, med, sigma = st.local_baseline(
        values, cfg.level_window, cfg.window, cfg.min_history, cfg.sigma_floor
    )
    base = np.exp(med) if logged else med
    lin = st.clean(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        flag = ((x - med) / sigma >= cfg.z_threshold) & (lin >= cfg.min_ratio * base)
    if not flag.any():  # the usual case: no spike, and no segment work to do
        none = np.empty(0, dtype=np.intp)
        return none, base[none]
    starts, ends = st.segments(flag)
    # isolated = short AND straight back: the point after it is below min_ratio x the baseline at
    # onset (a step up that stays is grad-explosion's, even once the short baseline caught up)
    after = np.minimum(ends + 1, len(lin) - 1)
    with np.errstate(invalid="ignore"):
        back = (ends + 1 >= len(lin)) | ~(lin[after] >= cfg.min_ratio * base[starts])
    short = ((ends - starts + 1) <= cfg.max_points) & back
    a, b = starts[short], ends[short]
    lens = b - a + 1
    idx = np.repeat(a, lens) + (
        np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
    )
    return idx, base[idx]


def _loss_responded(run: RunData, spike_steps: np.ndarray, tol: int) -> bool:
    if not len(spike_steps):
        return False
    s = usable(run, TRAIN_LOSS)
    if s is None:
        return False
    # whatever loss-spike reports counts (same shared events), so the two findings never disagree
    for ev in loss_spike.run_events(run):
        lo, hi = int(s.steps[ev.onset]) - tol, int(s.steps[max(ev.end, ev.onset)]) + tol
        if np.any((spike_steps >= lo) & (spike_steps <= hi)):
            return True
    if int(np.isfinite(s.values).sum()) < 12:
        return False
    x, logged, med, sigma = st.median_baseline(s.values, 64, 10, 0.01, floor_if_linear=False)
    with np.errstate(invalid="ignore", divide="ignore"):
        up = ((x - med) / sigma >= 3.0) & (
            (x - med) >= (np.log(1.05) if logged else 0.05 * np.abs(med))
        )
    up |= ~np.isfinite(s.values)
    return bool(np.any(st.near(s.steps[up], spike_steps, tol)))


def check(run: RunData, cfg: Config = DEFAULT) -> list[Finding] | Skipped:
    g = usable(run, GRAD_NORM)
    if g is None:
        return DETECTOR.skipped(run, f"no {GRAD_NORM} series")
    if np.isfinite(g.values).sum() <= cfg.min_history:
        return DETECTOR.skipped(
            run, f"{GRAD_NORM} has too few finite points ({cfg.min_history + 1} needed)"
        )
    idx, base = spike_points(g.values, cfg)
    if not idx.size:
        return []
    vals = g.values[idx]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(base > 0, vals / base, np.nan)
    if not np.isfinite(ratios).any():
        return []
    top = int(np.nanargmax(ratios))
    healthy = np.ones(len(g.values), dtype=bool)
    healthy[idx] = False
    hv = g.values[healthy & np.isfinite(g.values)]
    p50, p90, p99 = (float(np.percentile(hv, q)) for q in (50, 90, 99)) if hv.size else (None,) * 3
    steps = g.steps[idx]
    responded = _loss_responded(run, steps, st.log_interval(g.steps))
    n = len(idx)
    span = max(1, int(g.steps[-1] - g.steps[0]))
    per_10k = 1e4 * n / span
    frequent = n >= cfg.repeated and per_10k >= cfg.frequent_per_10k
    sev = (
        Severity.WARNING
        if responded or frequent or ratios[top] >= cfg.large_ratio
        else Severity.INFO
    )
    times = "once" if n == 1 else f"{n} times"
    msg = (
        f"grad norm spiked {times} without sustained growth, up to {st.fmt(float(vals[top]))} at step "
        f"{int(steps[top])}, {ratios[top]:.1f}x its baseline {st.fmt(float(base[top]))} (median of the "
        f"previous points, computed); "
        f"the loss {'responded' if responded else 'did not respond'}."
    )
    return [
        finding(
            CODE,
            KIND,
            run,
            severity=sev,
            metric=GRAD_NORM,
            step_start=int(steps[0]),
            step_end=int(steps[-1]),
            message=msg,
            evidence={
                "count": n,
                "spike_steps": st.steps_list(steps),
                "spike_values": vals[:50].tolist(),
                "max_ratio": float(ratios[top]),
                "max_step": int(steps[top]),
                "max_value": float(vals[top]),
                "baseline_at_max": float(base[top]),
                "healthy_p50": p50,
                "healthy_p90": p90,
                "healthy_p99": p99,
                "loss_responded": responded,
                "log_interval": st.log_interval(g.steps),
                "spikes_per_10k_steps": per_10k,
            },
        )
    ]


DETECTOR = Detector(
    code=CODE,
    kind=KIND,
    summary="isolated grad-norm outliers without sustained growth",
    doc=__doc__ or "",
    check=check,
    config=Config,
)
