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
import weakref
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

MAD_TO_SIGMA = 1.4826
DIFF_TO_SIGMA = 1.0 / (0.6745 * 2**0.5)

# Long runs: above LONG log points, trailing medians switch to a linear-time path (exact for the
# first HEAD points and for windows up to SMALL_WINDOW; per-block medians beyond). pandas' exact
# rolling median costs ~0.6 s per 1M points at window 64, and a run is judged by a dozen of them.
LONG = 100_000
HEAD = 4096
SMALL_WINDOW = 9

# Per-series cache of shared statistics, keyed on the identity of the values array (a Series'
# ``values``) and dropped when that array is garbage-collected: loss-spike, grad-spike,
# grad-explosion, lr-schedule and restart all need the same baselines of the same series.
_CACHE: dict[int, tuple[weakref.ref, dict]] = {}


def cached(values: np.ndarray, key: tuple, compute: Callable[[], Any]) -> Any:
    """``compute()`` once per (values array, key); arrays in the result are made read-only."""
    k = id(values)
    ent = _CACHE.get(k)
    if ent is None or ent[0]() is not values:
        try:
            ref = weakref.ref(values, lambda _r, k=k: _CACHE.pop(k, None))
        except TypeError:
            return compute()
        ent = (ref, {})
        _CACHE[k] = ent
    store = ent[1]
    if key not in store:
        res = compute()
        for a in res if isinstance(res, tuple) else (res,):
            if isinstance(a, np.ndarray):
                a.flags.writeable = False
        store[key] = res
    return store[key]


def clear_cache() -> None:
    _CACHE.clear()


def _median5(x: np.ndarray) -> np.ndarray:
    """m[k] = median of x[k : k + 5] (no NaN) with ten min/max passes over contiguous slices.

    With sorted pairs (a, b) and (c, d), the middle two of the four are max(a, c) and min(b, d);
    the median of five is the median of those two and the fifth value.
    """
    n = len(x) - 4
    a, b = np.minimum(x[0:n], x[1 : n + 1]), np.maximum(x[0:n], x[1 : n + 1])
    c, d = np.minimum(x[2 : n + 2], x[3 : n + 3]), np.maximum(x[2 : n + 2], x[3 : n + 3])
    lo, hi = np.maximum(a, c), np.minimum(b, d)
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    return np.maximum(lo, np.minimum(hi, x[4 : n + 4]))


def _trailing_fast(x: np.ndarray, w: int, lag: int) -> np.ndarray:
    """Trailing median ending ``lag`` points before i, no NaN in ``x``; NaN where incomplete.

    Windows up to SMALL_WINDOW are exact; longer ones use the median of the last complete block of
    ``w`` points ending at or before i - lag (the same statistic over a window up to ``w`` older).
    """
    n = len(x)
    out = np.full(n, np.nan)
    first = w - 1 + lag  # first index with a full window
    if n <= first:
        return out
    if w <= SMALL_WINDOW:
        if w == 5:
            med = _median5(x)
        else:
            med = np.median(np.lib.stride_tricks.sliding_window_view(x, w), axis=1)
        out[first:] = med[: n - first]
        return out
    nb = n // w
    bmed = np.median(x[: nb * w].reshape(nb, w), axis=1)
    # block b (points b*w .. b*w + w - 1) serves the w points from b*w + w - 1 + lag on
    out[first:] = np.repeat(bmed, w)[: n - first]
    return out


def _rolling_median_small(x: np.ndarray, window: int, min_periods: int, center: bool) -> np.ndarray:
    """pandas' ``Series(x).rolling(window, min_periods, center).median()``, in numpy, for short x.

    A pandas rolling median costs ~0.1 ms of fixed overhead per call, which on a tree of 100,000
    20-point runs (a dozen calls per run) outweighs the work itself; sorting every window of a short
    series at once is cheaper. Same semantics, bit for bit: +-Inf count as missing (pandas turns
    them into NaN), a window needs ``min_periods`` finite values, an odd count takes the middle
    value and an even one the mean of the middle two; ``center`` ends the window (window - 1) // 2
    points after i. The caller keeps ``len(x) * window`` small (SMALL_CELLS).
    """
    n = len(x)
    if not n:
        return np.full(0, np.nan)
    after = (window - 1) // 2 if center else 0
    before = window - 1 - after
    if not center and window > n:
        before = n - 1  # a trailing window longer than the series: the rest is all padding
    width = before + after + 1
    padded = np.full(n + width - 1, np.nan)
    padded[before : before + n] = x
    padded[np.isinf(padded)] = np.nan
    # row i = the window of point i, sorted (NaN sort last)
    srt = np.sort(padded[np.arange(n)[:, None] + np.arange(width)], axis=1)
    cum = np.concatenate([[0], np.cumsum(~np.isnan(padded))])
    count = cum[width : width + n] - cum[:n]  # finite values in each window
    rows = np.arange(n)
    a = srt[rows, np.maximum(count - 1, 0) // 2]
    b = srt[rows, count // 2]
    with np.errstate(over="ignore"):  # two values near the float limit: inf, as in pandas
        out = np.where(count % 2 == 1, a, (a + b) / 2.0)
    out[count < max(1, min_periods)] = np.nan
    return out


# Above this many window cells (points x window) the numpy path sorts more than pandas' O(n log w)
# skiplist costs; below it, the fixed cost of a pandas call dominates.
SMALL_CELLS = 32_768

# Up to this many points, medians, percentiles and the causal baselines run over Python lists of
# floats (``_rolling_median_list`` and the ``*_list`` helpers): a dozen numpy calls of ~1-5 us
# fixed cost each outweigh a sorted-list walk of 64 points (crossover measured at 64-100 points).
# Same numbers bit for bit (tests/detectors/test_tiny_path.py); 100,000 20-point runs (issue 13 R4).
TINY = 64


def _rolling_median_list(
    xs: list[float], window: int, min_periods: int, center: bool
) -> list[float]:
    """``_rolling_median_small`` over a list of floats, for a few dozen points.

    One sorted list of the window's finite values, kept by ``insort`` and bisect-delete as the
    window slides: the same middle value, or the same ``(a + b) / 2.0`` of the middle two (IEEE
    double arithmetic, overflowing to inf as numpy does), with no per-call numpy overhead.
    ``v - v == 0.0`` is the finiteness test (False for NaN and +-Inf).
    """
    n = len(xs)
    after = (window - 1) // 2 if center else 0
    before = window - 1 - after
    need = max(1, min_periods)
    nan = math.nan
    out = [nan] * n
    win: list[float] = []
    if not after and before >= n - 1:  # nothing leaves the window: an expanding median
        m, c = nan, 0
        for i, v in enumerate(xs):
            if v - v == 0.0:
                insort(win, v)
                c += 1
                if c >= need:
                    h = c >> 1
                    m = win[h] if c & 1 else (win[h - 1] + win[h]) / 2.0
            out[i] = m  # a missing value leaves the window, and so its median, as it was
        return out
    for v in xs[:after]:
        if v - v == 0.0:
            insort(win, v)
    # at point i, xs[i + after] enters the window and xs[i - before - 1] leaves it (NaN: none)
    enter = xs[after:] + [nan] * min(after, n)
    leave = [nan] * min(before + 1, n) + xs[: max(0, n - before - 1)]
    for i, (a, b) in enumerate(zip(enter, leave, strict=True)):
        if a - a == 0.0:
            insort(win, a)
        if b - b == 0.0:
            del win[bisect_left(win, b)]
        c = len(win)
        if c >= need:
            h = c >> 1
            out[i] = win[h] if c & 1 else (win[h - 1] + win[h]) / 2.0
    return out


def _trailing_list(xs: list[float], window: int, min_periods: int, lag: int) -> list[float]:
    """``trailing_median`` of a list (``_rolling_median_list`` of the series moved ``lag`` later)."""
    if lag:
        xs = [math.nan] * min(lag, len(xs)) + xs[: max(0, len(xs) - lag)]
    return _rolling_median_list(xs, window, min_periods, False)


def median_sorted(v: list[float]) -> float:
    """``np.median`` of sorted finite values: the middle one, or the mean of the middle two
    (numpy's ``mean`` of two values is ``(a + b) / 2`` in float64); NaN when empty."""
    n = len(v)
    if not n:
        return math.nan
    h = n >> 1
    return v[h] if n & 1 else (v[h - 1] + v[h]) / 2.0


def _finite_list(x: np.ndarray) -> list[float]:
    """The finite values of ``x`` as a list of floats (``v - v`` is NaN for NaN and +-Inf)."""
    return [v for v in x.tolist() if v - v == 0.0]


def _shifted(x: np.ndarray, lag: int) -> np.ndarray:
    """``x`` moved ``lag`` points later, NaN in front (``Series.shift(lag)``)."""
    if not lag:
        return x
    out = np.full(len(x), np.nan)
    if lag < len(x):
        out[lag:] = x[: len(x) - lag]
    return out


def trailing_median(x: np.ndarray, window: int, min_periods: int, lag: int = 0) -> np.ndarray:
    """Median of the ``window`` points ending ``lag`` points before each point (0: including it).

    Exact (pandas semantics, NaN skipped, ``min_periods`` finite values) up to LONG points: a
    sorted Python list up to TINY points (``_rolling_median_list``), numpy for short series
    (``_rolling_median_small``), pandas for longer. Longer series are judged on their finite
    points: exact over the first HEAD, then ``_trailing_fast``.
    """
    x = np.asarray(x, dtype=np.float64)
    if len(x) <= TINY and window >= 1 and 0 <= min_periods <= window and lag >= 0:
        return np.array(_trailing_list(x.tolist(), window, min_periods, lag), dtype=np.float64)
    if (
        window >= 1
        and 0 <= min_periods <= window
        and lag >= 0
        and len(x) * min(window, len(x)) <= SMALL_CELLS
    ):
        return _rolling_median_small(_shifted(x, lag), window, min_periods, center=False)
    if len(x) <= LONG:
        s = pd.Series(x)
        if lag:
            s = s.shift(lag)
        return s.rolling(window, min_periods=min_periods).median().to_numpy()
    ok = np.isfinite(x)
    xf = x[ok] if not ok.all() else x
    h = min(len(xf), HEAD)
    head = pd.Series(xf[:h]).shift(lag).rolling(window, min_periods=min_periods).median().to_numpy()
    res = _trailing_fast(xf, window, lag)
    res[:h] = head
    if xf is x:
        return res
    out = np.full(len(x), np.nan)
    out[ok] = res
    return out


def clean(values: np.ndarray) -> np.ndarray:
    """Float copy with +-Inf turned into NaN: every statistic below then skips them."""
    x = np.array(values, dtype=np.float64, copy=True)
    x[~np.isfinite(x)] = np.nan
    return x


def to_log(values: np.ndarray) -> tuple[np.ndarray, bool]:
    """Natural log when the series lives on a ratio scale (loss and norms), else the values as is.

    Ratio scale: no finite value is negative and more than half are > 0. Exact zeros are then
    treated as missing (a grad norm of exactly 0 is a logging artefact, not a level), so no
    baseline or ratio is ever measured from 0. Series with negative values (an ELBO, an RL
    objective) or mostly zeros keep the linear scale.
    """
    x = clean(values)
    fin = x[np.isfinite(x)]
    if fin.size and not np.any(fin < 0):
        pos = fin > 0
        if pos.all():
            return np.log(x), True
        if 2 * int(pos.sum()) > fin.size:
            x[x <= 0] = np.nan
            return np.log(x), True
    return x, False


def log_scale(values: np.ndarray) -> tuple[np.ndarray, bool]:
    """``to_log(values)``, cached per values array (read-only): loss-spike, grad-spike and
    grad-explosion each want the same log of the same series."""
    return cached(values, ("to_log",), lambda: to_log(values))


def _diff_sigma(x: np.ndarray, window: int, min_periods: int) -> np.ndarray:
    """Sigma from the median |successive difference| of the previous points (start-up fallback).

    Only the first points ever need it; on long series it is computed over the first HEAD.
    """
    n = len(x)
    h = n if n <= LONG else HEAD
    d = np.abs(np.diff(x[:h], prepend=np.nan))
    out = np.full(n, np.nan)
    out[:h] = DIFF_TO_SIGMA * trailing_median(d, window, max(2, min_periods - 1), lag=1)
    return out


def _valid_windows(window: int, min_periods: int) -> bool:
    """Windows the list paths take; others go the array path (where pandas rejects them)."""
    return 0 <= min_periods <= window and max(2, min_periods - 1) <= window


def _diff_sigma_list(xs: list[float], window: int, min_periods: int) -> list[float]:
    """``_diff_sigma`` of a short list (every point is in the head)."""
    d = [math.nan] + [abs(b - a) for a, b in zip(xs, xs[1:], strict=False)] if xs else []
    return [DIFF_TO_SIGMA * m for m in _trailing_list(d, window, max(2, min_periods - 1), 1)]


def _floored(sig: list[float], sigma_floor: float) -> list[float]:
    """``np.maximum(sig, sigma_floor)`` where ``sig`` is not NaN (NaN stays NaN)."""
    return [s if s != s or s >= sigma_floor else sigma_floor for s in sig]


def _median_sigma_list(
    xs: list[float], window: int, min_periods: int, sigma_floor: float
) -> tuple[list[float], list[float]]:
    """``causal_median_sigma`` of a short series (already cleaned) in plain floats.

    The same operations in the same order as the array path, each an IEEE double operation that
    numpy performs identically (subtraction, abs, product, comparison), so the result is the
    same bit for bit; only the per-call cost of a dozen small numpy calls is gone (TINY).
    """
    nan = math.nan
    med = _trailing_list(xs, window, min_periods, 1)
    dev = [abs(a - b) for a, b in zip(xs, med, strict=True)]
    mad = [MAD_TO_SIGMA * m for m in _trailing_list(dev, window, min_periods, 1)]
    fall = _diff_sigma_list(xs, window, min_periods)
    sigma = _floored([f if m != m else m for m, f in zip(mad, fall, strict=True)], sigma_floor)
    return med, [nan if m != m else s for m, s in zip(med, sigma, strict=True)]


def _local_sigma_list(
    xs: list[float], level_window: int, window: int, min_periods: int, sigma_floor: float
) -> tuple[list[float], list[float]]:
    """``causal_local_sigma`` of a short series (already cleaned) in plain floats, step for step
    the array path's operations (see ``_median_sigma_list``)."""
    nan = math.nan
    level = _trailing_list(xs, level_window, 1, 1)
    r = [a - b for a, b in zip(xs, level, strict=True)]
    center = _trailing_list(r, window, min_periods, 1)
    dev = [abs(a - b) for a, b in zip([nan, *r[:-1]], center, strict=False)]
    sigma = [MAD_TO_SIGMA * m for m in _trailing_list(dev, window, min_periods, 0)]
    fall = _diff_sigma_list(xs, window, min_periods)
    sig = _floored([f if s != s else s for s, f in zip(sigma, fall, strict=True)], sigma_floor)
    exp_ = [
        nan if s != s else lv + (0.0 if c != c else c)
        for lv, c, s in zip(level, center, sig, strict=True)
    ]
    return exp_, [nan if e != e else s for e, s in zip(exp_, sig, strict=True)]


def causal_median_sigma(
    x: np.ndarray,
    window: int,
    min_periods: int,
    sigma_floor: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Rolling median and MAD-based sigma of the *previous* ``window`` finite points.

    The MAD is approximated by the rolling median of each point's absolute deviation from its own
    causal median, which keeps the whole computation O(n log window) in pandas; before enough
    deviations exist it falls back to the median absolute successive difference. NaN where fewer
    than ``min_periods`` finite points precede. Linear-time beyond LONG points (``trailing_median``).
    """
    x = clean(x)
    if len(x) <= TINY and _valid_windows(window, min_periods):
        med_l, sig_l = _median_sigma_list(x.tolist(), window, min_periods, sigma_floor)
        return np.array(med_l, dtype=np.float64), np.array(sig_l, dtype=np.float64)
    med = trailing_median(x, window, min_periods, lag=1)
    dev = np.abs(x - med)
    mad = MAD_TO_SIGMA * trailing_median(dev, window, min_periods, lag=1)
    # Until enough deviations exist, estimate sigma from successive differences (median |diff| /
    # (0.6745 * sqrt 2) for iid noise), so short logs are judged from their 5th point on.
    sigma = np.where(np.isnan(mad), _diff_sigma(x, window, min_periods), mad)
    ok = ~np.isnan(sigma)
    sigma[ok] = np.maximum(sigma[ok], sigma_floor)
    sigma[np.isnan(med)] = np.nan
    return med, sigma


def causal_local_sigma(
    x: np.ndarray,
    level_window: int,
    window: int,
    min_periods: int,
    sigma_floor: float = 0.0,
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
    Linear-time beyond LONG points (``trailing_median``).
    """
    x = clean(x)
    if len(x) <= TINY and level_window >= 1 and _valid_windows(window, min_periods):
        exp_l, sig_l = _local_sigma_list(x.tolist(), level_window, window, min_periods, sigma_floor)
        return np.array(exp_l, dtype=np.float64), np.array(sig_l, dtype=np.float64)
    level = trailing_median(x, level_window, 1, lag=1)
    r = x - level
    center = trailing_median(r, window, min_periods, lag=1)
    r_prev = np.concatenate([[np.nan], r[:-1]])
    dev = np.abs(r_prev - center)  # each residual against the centre known before it
    sigma = MAD_TO_SIGMA * trailing_median(dev, window, min_periods, lag=0)
    # until enough residuals exist: sigma from successive differences, no lag correction
    sig = np.where(np.isnan(sigma), _diff_sigma(x, window, min_periods), sigma)
    exp_ = level + np.where(np.isnan(center), 0.0, center)
    ok = ~np.isnan(sig)
    sig[ok] = np.maximum(sig[ok], sigma_floor)
    exp_[np.isnan(sig)] = np.nan
    sig[np.isnan(exp_)] = np.nan
    return exp_, sig


def local_baseline(
    values: np.ndarray,
    level_window: int,
    window: int,
    min_periods: int,
    sigma_floor: float,
    floor_if_linear: bool = True,
) -> tuple[np.ndarray, bool, np.ndarray, np.ndarray]:
    """Cached ``causal_local_sigma`` of ``to_log(values)``: (x, logged, expected, sigma).

    On the log scale the floor applies as given; on a linear scale only when ``floor_if_linear``.
    """

    def compute() -> tuple[np.ndarray, bool, np.ndarray, np.ndarray]:
        x, logged = log_scale(values)
        floor = sigma_floor if (logged or floor_if_linear) else 0.0
        med, sigma = causal_local_sigma(x, level_window, window, min_periods, floor)
        return x, logged, med, sigma

    return cached(
        values, ("local", level_window, window, min_periods, sigma_floor, floor_if_linear), compute
    )


def median_baseline(
    values: np.ndarray,
    window: int,
    min_periods: int,
    sigma_floor: float,
    floor_if_linear: bool = True,
) -> tuple[np.ndarray, bool, np.ndarray, np.ndarray]:
    """Cached ``causal_median_sigma`` of ``to_log(values)``: (x, logged, median, sigma)."""

    def compute() -> tuple[np.ndarray, bool, np.ndarray, np.ndarray]:
        x, logged = log_scale(values)
        floor = sigma_floor if (logged or floor_if_linear) else 0.0
        med, sigma = causal_median_sigma(x, window, min_periods, floor)
        return x, logged, med, sigma

    return cached(values, ("median", window, min_periods, sigma_floor, floor_if_linear), compute)


def rolling_median(x: np.ndarray, window: int, center: bool = False) -> np.ndarray:
    """Rolling median of finite values (a robust level; ``center`` for after-the-fact smoothing).

    Beyond LONG points a centred window longer than 64 is taken over medians of blocks of
    window/16 points, interpolated back to every point (linear time, same level within a block).
    """
    w = max(1, int(window))
    x = clean(x)
    if center and len(x) > LONG and w > 64:
        ok = np.isfinite(x)
        xf = x[ok]
        k = max(1, w // 16)
        nb = len(xf) // k
        if nb >= 2:
            bmed = np.median(xf[: nb * k].reshape(nb, k), axis=1)
            mids = np.arange(nb) * k + (k - 1) / 2.0
            if nb * k < len(xf):
                bmed = np.append(bmed, np.median(xf[nb * k :]))
                mids = np.append(mids, (nb * k + len(xf) - 1) / 2.0)
            sm = (
                pd.Series(bmed)
                .rolling(max(1, w // k) | 1, min_periods=1, center=True)
                .median()
                .to_numpy()
            )
            out = np.full(len(x), np.nan)
            out[ok] = np.interp(np.arange(len(xf)), mids, sm)
            return out
    if len(x) <= TINY:
        return np.array(_rolling_median_list(x.tolist(), w, 1, center), dtype=np.float64)
    if len(x) * w <= SMALL_CELLS:
        return _rolling_median_small(x, w, 1, center)
    return pd.Series(x).rolling(w, min_periods=1, center=center).median().to_numpy()


def segments(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end indices (inclusive) of each run of True in ``mask``."""
    m = np.asarray(mask, dtype=bool)
    if not m.size:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    d = np.diff(np.concatenate([[0], m.astype(np.int8), [0]]))
    return np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1


def merge_segments(
    starts: np.ndarray,
    ends: np.ndarray,
    gap: int,
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
    """Median of the finite values (NaN if none); a sorted list for a few dozen values."""
    fin = np.asarray(x, dtype=np.float64)
    if fin.ndim == 1 and len(fin) <= TINY:
        return median_sorted(sorted(_finite_list(fin)))
    fin = fin[np.isfinite(fin)]
    return float(np.median(fin)) if fin.size else math.nan


def percentile(x: np.ndarray, q: float) -> float:
    """``np.percentile(x, q)`` (linear method) of a 1-D array; a sorted list for a few dozen finite
    values, with numpy's own index and interpolation arithmetic so the number is the same."""
    if x.ndim != 1 or not 0 < len(x) <= TINY or not 0 <= q <= 100:
        return float(np.percentile(x, q))
    v = sorted(_finite_list(x))
    if len(v) != len(x):  # NaN in x: numpy's NaN result
        return float(np.percentile(x, q))
    return percentile_sorted(v, q)


def percentile_sorted(v: list[float], q: float) -> float:
    """``np.percentile`` (linear) of a non-empty sorted list of finite floats, 0 <= q <= 100."""
    n = len(v)
    virt = (n - 1) * (q / 100)
    if virt >= n - 1:
        prev = nxt = n - 1
        gamma = virt - (-1)  # numpy measures gamma from index -1 there (the weight is moot)
    else:
        prev = math.floor(virt)
        nxt = prev + 1
        gamma = virt - prev
    a, b = v[prev], v[nxt]
    diff = b - a
    return b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma


def robust_sigma(x: np.ndarray) -> float:
    """MAD-based sigma of the finite values (NaN if none)."""
    fin = np.asarray(x, dtype=np.float64)
    if fin.ndim == 1 and len(fin) <= TINY:
        v = _finite_list(fin)
        if not v:
            return math.nan
        m = median_sorted(sorted(v))
        return MAD_TO_SIGMA * median_sorted(sorted(abs(a - m) for a in v))
    fin = fin[np.isfinite(fin)]
    if not fin.size:
        return math.nan
    return float(MAD_TO_SIGMA * np.median(np.abs(fin - np.median(fin))))


def log_interval(steps: np.ndarray) -> int:
    """Typical distance between logged steps (1 when logging every step)."""
    if len(steps) < 2:
        return 1
    if len(steps) <= TINY and steps.dtype.kind in "iu":
        # np.median of integers is their float64 mean: the middle value or (a + b) / 2
        d = (steps[1:] - steps[:-1]).tolist()  # numpy's integer differences (np.diff)
        return max(1, int(median_sorted(sorted(float(v) for v in d))))
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


def pct(frac: float) -> str:
    """A fraction as a percentage for messages: ``100%``, ``52.6%``, ``5.3%``, ``0.27%``, ``<0.01%``.

    Never scientific notation (``:.2g`` of 100 is ``1e+02``); a fraction below 1 never reads 100%.
    """
    if not math.isfinite(frac):
        return "nan%"
    p = 100.0 * frac
    if p == 0:
        return "0%"
    if p >= 1:
        txt = f"{p:.1f}".removesuffix(".0")
        if txt == "100" and frac < 1:
            txt = "99.9"
        return f"{txt}%"
    return f"{p:.2g}%" if p >= 0.01 else "<0.01%"


def steps_list(steps: Iterable[int], limit: int = 50) -> list[int]:
    return [int(s) for s in list(steps)[:limit]]


def thirds_levels(x: np.ndarray, frac: float = 0.10) -> tuple[float, float, float]:
    """Medians of the first ``frac``, the ``frac`` before the last one, and the last ``frac``.

    A trend test that one outlier cannot move: "still rising" = last > previous.
    """
    n = len(x)
    k = max(2, int(frac * n))
    return (
        float(np.median(x[:k])),
        float(np.median(x[max(0, n - 2 * k) : n - k])),
        float(np.median(x[-k:])),
    )


def loss_trend(
    values: np.ndarray, steps: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Finite steps and values of a loss, its smoothing window (n/50 points, odd, >= 5) and the
    centred rolling median over it: the one trend divergence and stall both judge (cached per
    series, so the second detector gets it for free)."""
    ok = np.isfinite(values)
    s, x = steps[ok], values[ok]
    w = max(5, len(x) // 50) | 1
    return s, x, w, cached(values, ("trend", w), lambda: rolling_median(x, w, center=True))
