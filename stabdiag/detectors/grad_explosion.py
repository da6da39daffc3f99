"""grad-explosion (SD202): the gradient norm grows by orders of magnitude or stays far above baseline.

What it detects
    A sustained excursion of the total gradient norm: its short rolling median stays at least
    ``factor`` (10) x the median of the preceding ``window`` points for ``min_points`` (5)
    consecutive log points or more. Unlike a grad spike it does not come straight back.

Why it matters
    A gradient norm that stays an order of magnitude above its history means the optimiser is
    taking huge steps; the loss usually follows within a few hundred steps (Takase et al. "Spike No
    More": spikes early, then explosion at ~13k steps on a 1.7B model).

How it is computed
    level = rolling median of log(grad norm) over the last ``smooth`` (5) points; reference =
    rolling median of the ``window`` (100) points that end ``smooth`` points earlier (at least
    ``min_history`` = 20 finite), or the lowest full-window baseline seen so far if lower (so a slow
    exponential climb cannot drag its own baseline along). Points with level - reference >= log(``factor``) are excursions;
    excursions lasting >= ``min_points`` log points are explosions (``error``), one finding per
    event, with onset step, peak and growth factor. Non-finite grad norms are excluded here and
    reported by nonfinite.
    Short logs (pasted fragments: ``few_min_points`` (5) to ``min_history`` (20) finite points),
    where no rolling baseline exists: reference = median of the whole series (robust while fewer
    than half the points are high); >= ``few_sustained`` (2) consecutive points >= ``factor`` x it,
    after at least 2 points below it, are an explosion (minimum evidence: two points an order of
    magnitude above most of the log).

Known false positives
    A deliberate change of the loss scale in the logged norm (e.g. logging unscaled fp16 grads),
    or switching gradient accumulation mid-run, multiplies the logged norm without any instability.

References
    Megatron ``--check-for-large-grads`` (10x the max of the first 100 values); OLMo
    ``max_grad_norm_ratio``; Takase et al. 2023 (arXiv 2312.16903); allenai/OLMo #596 (grad norm
    rising).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from stabdiag import words
from stabdiag.detectors import _stats as st
from stabdiag.detectors._common import finding, usable
from stabdiag.detectors.base import Detector
from stabdiag.findings import Finding, Severity, Skipped
from stabdiag.table import GRAD_NORM, RunData

CODE, KIND = "SD202", "grad-explosion"


@dataclass(frozen=True, kw_only=True)
class Config:
    """Thresholds of the grad-explosion check (``[tool.stabdiag.detectors.grad-explosion]``)."""

    smooth: int = 5
    """The grad-norm level is the rolling median of log(grad norm) over this many log points, so a
    single outlier (a grad spike) cannot make an explosion."""
    window: int = 100
    """The reference is the median of this many points ending ``smooth`` points earlier (or the
    lowest full-window reference so far, if lower: a slow climb cannot drag its baseline along)."""
    min_history: int = 20
    """Finite points needed for a rolling reference; shorter logs use the short-log rule."""
    factor: float = 10.0
    """Level at least this multiple of the reference is an excursion: Megatron's large-grad check
    uses 10x the max of the first 100 values."""
    min_points: int = 5
    """An excursion lasting this many log points is an explosion (error); shorter ones are spikes."""
    few_min_points: int = 5
    """Short-log rule: fewest finite points judged at all (reference = median of the whole log)."""
    few_sustained: int = 2
    """Short-log rule: this many consecutive points at ``factor`` x the reference, after at least
    two points below it, are an explosion: the least evidence of an order-of-magnitude step."""


DEFAULT = Config()


def find_explosions(values: np.ndarray, cfg: Config = DEFAULT) -> list[tuple[int, int, float]]:
    """(start index, end index, reference level) of each sustained excursion (cached); short logs
    (``few_min_points`` to ``min_history`` finite points) use the short-log rule."""

    def compute() -> tuple[tuple[int, int, float], ...]:
        n_fin = int(np.isfinite(values).sum())
        if n_fin > cfg.min_history:
            return tuple(_find_explosions(values, cfg))
        return tuple(_few_point_explosions(values, cfg)) if n_fin >= cfg.few_min_points else ()

    return list(st.cached(values, ("grad-explosions", cfg), compute))


def _find_explosions(values: np.ndarray, cfg: Config) -> list[tuple[int, int, float]]:
    x, logged = st.log_scale(values)
    if not logged:
        return []
    level = st.trailing_median(x, cfg.smooth, max(1, cfg.smooth // 2 + 1))
    ref = st.trailing_median(x, cfg.window, cfg.min_history, lag=cfg.smooth)
    # A steady exponential climb drags a rolling baseline up with it (e^(t/25) never gets 10x above
    # the median of its last 100 points): compare with the lowest full-window baseline seen so far
    # as well. Full windows only, so an LR warm-up's rising grad norm is not measured from step 0.
    full = pd.Series(st.trailing_median(x, cfg.window, cfg.window, lag=cfg.smooth))
    ref = np.fmin(ref, full.cummin().to_numpy())
    with np.errstate(invalid="ignore"):
        high = (level - ref) >= math.log(cfg.factor)
    starts, ends = st.segments(high)
    out: list[tuple[int, int, float]] = []
    covered = -1
    thr = math.log(cfg.factor)
    for a, b in zip(starts, ends, strict=True):
        if a <= covered or b - a + 1 < cfg.min_points:
            continue
        # Freeze the reference at onset: the event lasts until the level falls back below it.
        with np.errstate(invalid="ignore"):
            back = st.first_index(level - ref[a] < thr, int(a))
        covered = len(x) - 1 if back < 0 else back - 1
        lag = cfg.smooth // 2  # the median lags by half its window
        onset = max(0, int(a) - lag)
        end = covered if back < 0 else max(onset, covered - lag)
        out.append((onset, end, float(np.exp(ref[a]))))
    return out


def _few_point_explosions(values: np.ndarray, cfg: Config) -> list[tuple[int, int, float]]:
    """Short-log rule: runs of >= few_sustained points >= factor x the series median."""
    x, logged = st.log_scale(values)
    if not logged:
        return []
    ref = st.nanmedian(x)
    with np.errstate(invalid="ignore"):
        high = x - ref >= math.log(cfg.factor)
    if not high.any():  # nothing 10x above the median: no run of points to look at
        return []
    low_before = np.cumsum(np.isfinite(x) & ~high)
    starts, ends = st.segments(high)
    keep = (
        (ends - starts + 1 >= cfg.few_sustained)
        & (low_before[np.maximum(starts - 1, 0)] >= 2)
        & (starts >= 2)
    )
    return [
        (int(a), int(b), float(np.exp(ref))) for a, b in zip(starts[keep], ends[keep], strict=True)
    ]


def check(run: RunData, cfg: Config = DEFAULT) -> list[Finding] | Skipped:
    g = usable(run, GRAD_NORM)
    if g is None:
        return DETECTOR.skipped(run, f"no {GRAD_NORM} series")
    n_fin = int(np.isfinite(g.values).sum())
    if n_fin <= cfg.min_history and n_fin < cfg.few_min_points:
        return DETECTOR.skipped(
            run, f"{GRAD_NORM} has too few finite points ({cfg.few_min_points} needed)"
        )
    events = find_explosions(g.values, cfg)
    out: list[Finding] = []
    for a, b, ref in events:
        seg = st.clean(g.values[a : b + 1])
        pk = a + int(np.nanargmax(seg))
        peak = float(g.values[pk])
        growth = peak / ref
        at_end = b >= len(g.values) - 1
        prev = np.flatnonzero(np.isfinite(g.values[:a]))
        last_ok = (
            f"; the last value before it was {st.fmt(float(g.values[prev[-1]]))} at step {int(g.steps[prev[-1]])}"
            if prev.size
            else ""
        )
        msg = (
            f"grad norm exploded {growth:.0f}x to {st.fmt(peak)} at step {int(g.steps[pk])} (baseline "
            f"{st.fmt(ref)}, the median before the onset, computed{last_ok}) from step {int(g.steps[a])}"
            + (
                " and was still high at the end of the log."
                if at_end
                else f", staying above {cfg.factor:g}x its baseline for {words.count(int(g.steps[b] - g.steps[a]), 'step')}."
            )
        )
        out.append(
            finding(
                CODE,
                KIND,
                run,
                severity=Severity.ERROR,
                metric=GRAD_NORM,
                step_start=int(g.steps[a]),
                step_end=int(g.steps[b]),
                message=msg,
                evidence={
                    "onset_step": int(g.steps[a]),
                    "baseline": ref,
                    "peak": peak,
                    "peak_step": int(g.steps[pk]),
                    "growth": growth,
                    "orders_of_magnitude": math.log10(growth) if growth > 0 else None,
                    "points": b - a + 1,
                    "until_end": at_end,
                },
            )
        )
    return out


DETECTOR = Detector(
    code=CODE,
    kind=KIND,
    summary="grad norm grows by orders of magnitude or stays far above baseline",
    doc=__doc__ or "",
    check=check,
    config=Config,
)
