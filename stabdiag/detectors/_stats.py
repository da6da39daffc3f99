"""Shared robust statistics for the detectors, vectorised (runs can have a million log points).

Everything works in *log points* (the index of a logged value), not in steps, so a run logged every
step and a run logged every 100 steps are judged by the same rules. Baselines are causal: the
statistic at point ``i`` only sees points before ``i``, so a spike never hides inside its own
baseline. Non-finite values are excluded from every baseline (treated as missing), never fatal.

References: the rolling median/MAD baseline follows OLMo-core's rolling-window spike rule
(6 sigma over 128 previous values) with the mean/std replaced by median/MAD for robustness; the EMA
z-score follows ZClip (alpha 0.97, warm-up 25). MAD-to-sigma factor 1.4826 is the normal-consistency
constant.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

MAD_TO_SIGMA = 1.4826
DIFF_TO_SIGMA = 1.0 / (0.6745 * 2 ** 0.5)


def clean(values: np.ndarray) -> np.ndarray:
    """Float copy with +-Inf turned into NaN: every statistic below then skips them."""
    x = np.array(values, dtype=np.float64, copy=True)
    x[~np.isfinite(x)] = np.nan
    return x


def to_log(values: np.ndarray) -> tuple[np.ndarray, bool]:
    """Natural log when every finite value is > 0 (loss and norms live on a ratio scale).

    Returns the transformed array and whether the log was taken; negative or zero values (an ELBO,
    an RL objective) keep the linear scale.
    """
    x = clean(values)
    fin = x[np.isfinite(x)]
    if fin.size and np.all(fin > 0):
        return np.log(x), True
    return x, False


def causal_median_sigma(
    x: np.ndarray, window: int, min_periods: int, sigma_floor: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Rolling median and MAD-based sigma of the *previous* ``window`` finite points.

    The MAD is approximated by the rolling median of each point's absolute deviation from its own
    causal median, which keeps the whole computation O(n log window) in pandas; before enough
    deviations exist it falls back to the median absolute successive difference. NaN where fewer
    than ``min_periods`` finite points precede.
    """
    s = pd.Series(clean(x))
    prev = s.shift(1)
    med = prev.rolling(window, min_periods=min_periods).median()
    dev = (s - med).abs()
    mad = MAD_TO_SIGMA * dev.shift(1).rolling(window, min_periods=min_periods).median()
    # Until enough deviations exist, estimate sigma from successive differences (median |diff| /
    # (0.6745 * sqrt 2) for iid noise), so short logs are judged from their 5th point on.
    diffs = s.diff().abs().shift(1).rolling(window, min_periods=max(2, min_periods - 1)).median()
    sigma = mad.fillna(DIFF_TO_SIGMA * diffs).to_numpy(copy=True)
    ok = ~np.isnan(sigma)
    sigma[ok] = np.maximum(sigma[ok], sigma_floor)
    sigma[np.isnan(med.to_numpy())] = np.nan
    return med.to_numpy(copy=True), sigma


def causal_local_sigma(
    x: np.ndarray, level_window: int, window: int, min_periods: int, sigma_floor: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Trend-robust causal baseline: (expected value, sigma) at each point from previous points only.

    level = median of the previous ``level_window`` finite points (short, so a steeply decaying
    curve does not leave its baseline behind); residual = x - level. The expected value is level
    plus the median of the previous ``window`` residuals (the lag of the short median on a trend),
    and sigma = 1.4826 x their MAD. A long median on a fast-falling curve (early training, or logs
    every 100 steps) lags far behind and its MAD measures the trend, not the noise: a 3x spike
    then scores z 3. The residual MAD measures the noise around the local level whatever the
    trend, and is robust to the spikes themselves. Until ``min_periods`` residuals exist, sigma
    comes from the median successive difference (as in ``causal_median_sigma``); NaN before that.
    """
    s = pd.Series(clean(x))
    prev = s.shift(1)
    level = prev.rolling(level_window, min_periods=1).median()
    resid = (s - level).shift(1)
    roll = resid.rolling(window, min_periods=min_periods)
    center = roll.median()
    dev = (resid - center).abs()   # each residual against the centre known before it
    sigma = MAD_TO_SIGMA * dev.rolling(window, min_periods=min_periods).median()
    # until enough residuals exist: sigma from successive differences, no lag correction
    diffs = s.diff().abs().shift(1).rolling(window, min_periods=max(2, min_periods - 1)).median()
    sig = sigma.fillna(DIFF_TO_SIGMA * diffs).to_numpy(copy=True)
    exp_ = (level + center.fillna(0.0)).to_numpy(copy=True)
    ok = ~np.isnan(sig)
    sig[ok] = np.maximum(sig[ok], sigma_floor)
    exp_[np.isnan(sig)] = np.nan
    sig[np.isnan(exp_)] = np.nan
    return exp_, sig


def robust_z(x: np.ndarray, window: int, min_periods: int, sigma_floor: float) -> np.ndarray:
    """(x - causal median) / causal MAD-sigma; NaN where there is no baseline yet."""
    med, sigma = causal_median_sigma(x, window, min_periods, sigma_floor)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (clean(x) - med) / sigma


def ema_zscore(x: np.ndarray, alpha: float = 0.97, warmup: int = 25, eps: float = 1e-6) -> np.ndarray:
    """ZClip-style z-score against the EMA mean/variance of the previous points.

    ``alpha`` is the weight kept on the past (ZClip's convention), so pandas' ``alpha`` is
    ``1 - alpha``. The first ``warmup`` finite points get NaN.
    """
    s = pd.Series(clean(x))
    ew = s.ewm(alpha=1.0 - alpha, adjust=False, ignore_na=True)
    mean = ew.mean().shift(1).to_numpy()
    std = np.sqrt(ew.var(bias=True).shift(1).to_numpy())
    count = np.cumsum(np.isfinite(s.to_numpy()))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (s.to_numpy() - mean) / (std + eps)
    z[np.concatenate([[0], count[:-1]]) < warmup] = np.nan
    return z


def rolling_median(x: np.ndarray, window: int, center: bool = False) -> np.ndarray:
    """Rolling median of finite values (a robust level; ``center`` for after-the-fact smoothing)."""
    w = max(1, int(window))
    return pd.Series(clean(x)).rolling(w, min_periods=1, center=center).median().to_numpy()


def segments(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end indices (inclusive) of each run of True in ``mask``."""
    m = np.asarray(mask, dtype=bool)
    if not m.size:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    d = np.diff(np.concatenate([[0], m.astype(np.int8), [0]]))
    return np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1


def merge_segments(
    starts: np.ndarray, ends: np.ndarray, gap: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge segments separated by at most ``gap`` points (one event, not several)."""
    if len(starts) < 2:
        return starts, ends
    new = np.concatenate([[True], starts[1:] - ends[:-1] - 1 > gap])
    idx = np.flatnonzero(new)
    last = np.concatenate([idx[1:] - 1, [len(starts) - 1]])
    return starts[idx], ends[last]


def first_index(mask: np.ndarray, start: int, limit: int | None = None) -> int:
    """First index >= ``start`` (and < ``start + limit``) where ``mask`` holds; -1 if none."""
    stop = len(mask) if limit is None else min(len(mask), start + limit)
    if start >= stop:
        return -1
    hit = np.flatnonzero(mask[start:stop])
    return int(start + hit[0]) if hit.size else -1


def nanmedian(x: np.ndarray) -> float:
    fin = np.asarray(x, dtype=np.float64)
    fin = fin[np.isfinite(fin)]
    return float(np.median(fin)) if fin.size else math.nan


def robust_sigma(x: np.ndarray) -> float:
    """MAD-based sigma of the finite values (NaN if none)."""
    fin = np.asarray(x, dtype=np.float64)
    fin = fin[np.isfinite(fin)]
    if not fin.size:
        return math.nan
    return float(MAD_TO_SIGMA * np.median(np.abs(fin - np.median(fin))))


def log_interval(steps: np.ndarray) -> int:
    """Typical distance between logged steps (1 when logging every step)."""
    if len(steps) < 2:
        return 1
    return max(1, int(np.median(np.diff(steps))))


def near(steps: np.ndarray, targets: np.ndarray, tolerance: int) -> np.ndarray:
    """For each step, whether some target step lies within ``tolerance`` steps of it."""
    t = np.sort(np.asarray(targets, dtype=np.int64))
    s = np.asarray(steps, dtype=np.int64)
    if not t.size:
        return np.zeros(len(s), dtype=bool)
    pos = np.searchsorted(t, s)
    lo = t[np.clip(pos - 1, 0, len(t) - 1)]
    hi = t[np.clip(pos, 0, len(t) - 1)]
    return (np.abs(s - lo) <= tolerance) | (np.abs(hi - s) <= tolerance)


def value_at(steps: np.ndarray, values: np.ndarray, step: int) -> float | None:
    """Value of a series at the last logged step <= ``step`` (None if none or non-finite)."""
    i = int(np.searchsorted(steps, step, side="right")) - 1
    if i < 0:
        return None
    v = float(values[i])
    return v if math.isfinite(v) else None


def plain(value: Any) -> Any:
    """JSON-able plain value: numpy scalars to Python, NaN/Inf to None, containers recursively."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    return value


def fmt(x: float | None, digits: int = 3) -> str:
    """Short human number for messages: 3 significant digits, no scientific notation for 1e-3..1e6."""
    if x is None or not math.isfinite(x):
        return "nan"
    a = abs(x)
    if a != 0 and (a < 1e-3 or a >= 1e6):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def steps_list(steps: Iterable[int], limit: int = 50) -> list[int]:
    return [int(s) for s in list(steps)[:limit]]


def thirds_levels(x: np.ndarray, frac: float = 0.10) -> tuple[float, float, float]:
    """Medians of the first ``frac``, the ``frac`` before the last one, and the last ``frac``.

    A trend test that one outlier cannot move: "still rising" = last > previous.
    """
    n = len(x)
    k = max(2, int(frac * n))
    return (float(np.median(x[:k])), float(np.median(x[max(0, n - 2 * k):n - k])),
            float(np.median(x[-k:])))
