"""The short-series paths equal their references: _stats' numpy rolling median equals pandas', and
loss_spike's array version of the short-log fragment rule equals the point-by-point rule.

Bit for bit, not within a tolerance: findings must not change with the path a series takes. The
reference is pandas itself, on random series with NaN, +-Inf, ties, values near the float limit
(an even count's mean overflows the same way) and edge lengths (empty, one point, a window or a
lag longer than the series).
"""

import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest
from detectors_util import short_noisy_loss

from stabdiag.detectors import _stats as st
from stabdiag.detectors import loss_spike


def _series(rng, n):
    x = rng.standard_normal(n) * 10.0 ** float(rng.integers(-3, 308))
    u = rng.random(n)
    x[u < 0.1] = np.nan
    x[(u >= 0.1) & (u < 0.15)] = np.inf
    x[(u >= 0.15) & (u < 0.2)] = -np.inf
    if rng.random() < 0.3:
        x = np.round(x)  # ties
    return x


def _trailing_ref(x, window, min_periods, lag):
    return pd.Series(x).shift(lag).rolling(window, min_periods=min_periods).median().to_numpy()


def test_trailing_median_equals_pandas_on_random_series():
    rng = np.random.default_rng(13)
    for _ in range(1500):
        n = int(rng.integers(0, 90))
        w = int(rng.integers(1, 140))
        mp = int(rng.integers(0, w + 1))
        lag = int(rng.integers(0, 6))
        x = _series(rng, n)
        got = st.trailing_median(x, w, mp, lag)
        assert np.array_equal(got, _trailing_ref(x, w, mp, lag), equal_nan=True), (n, w, mp, lag)


@pytest.mark.parametrize(
    "x",
    [
        [],
        [1.0],
        [np.nan],
        [np.inf, -np.inf],
        [1e308, 1e308],  # even count: (a + b) / 2 overflows in pandas too
        [1e308, 1e308, 1e308],  # odd count: the middle value, no overflow
        [-1e308, 1e308, 5.0, np.nan, 2.0],
    ],
)
@pytest.mark.parametrize("window,min_periods,lag", [(1, 1, 0), (2, 1, 0), (3, 2, 1), (64, 1, 9)])
def test_trailing_median_edge_cases(x, window, min_periods, lag):
    x = np.asarray(x, dtype=np.float64)
    ref = _trailing_ref(x, window, min_periods, lag)
    assert np.array_equal(st.trailing_median(x, window, min_periods, lag), ref, equal_nan=True)


def test_rolling_median_equals_pandas_centred_and_trailing():
    rng = np.random.default_rng(4)
    for _ in range(1500):
        n = int(rng.integers(0, 90))
        w = int(rng.integers(1, 40))
        center = bool(rng.integers(0, 2))
        x = _series(rng, n)
        # rolling_median cleans +-Inf to NaN first; the inner path must do the same on raw input
        ref = pd.Series(x).rolling(w, min_periods=1, center=center).median().to_numpy()
        got = st._rolling_median_small(x, w, 1, center)
        assert np.array_equal(got, ref, equal_nan=True), (n, w, center)
        assert np.array_equal(st.rolling_median(x, w, center), ref, equal_nan=True)


def test_size_threshold_paths_agree(monkeypatch):
    """Around SMALL_CELLS the two paths meet: the shared baselines are identical either way."""
    rng = np.random.default_rng(7)
    for n in (20, 63, 64, 65, 511, 513, 2000):
        x = np.exp(1.0 - 0.001 * np.arange(n) + 0.05 * rng.standard_normal(n))
        x[rng.random(n) < 0.05] = np.nan
        x[rng.integers(0, n)] *= 8.0
        results = []
        for cells in (st.SMALL_CELLS, 0):  # 0: every window goes to pandas
            monkeypatch.setattr(st, "SMALL_CELLS", cells)
            st.clear_cache()
            v = x.copy()
            results.append(
                (
                    st.local_baseline(v, 5, 64, 5, 0.01)[2:],
                    st.median_baseline(v, 64, 10, 0.05)[2:],
                    st.loss_trend(v, np.arange(n))[3],
                )
            )
        st.clear_cache()
        fast, ref = results
        for a, b in zip((*fast[0], *fast[1], fast[2]), (*ref[0], *ref[1], ref[2]), strict=True):
            assert np.array_equal(a, b, equal_nan=True), n


def _fragment_events_pointwise(steps, values, restarts, cfg):
    """The short-log rule as first written, point by point: the reference for the array version."""
    import math

    x, logged = st.to_log(values)
    if not logged:
        return []
    fid = loss_spike.fragment_ids(steps, restarts, cfg.fragment_gap)
    dx = np.abs(np.diff(x))
    dx = dx[(fid[1:] == fid[:-1]) & np.isfinite(dx)]
    if dx.size < 4:
        return []
    log_sigma = float(np.percentile(dx, 25)) / (0.31864 * 2**0.5)
    events = []
    for f in range(int(fid[-1]) + 1 if len(x) else 0):
        idx = np.flatnonzero(fid == f)
        k = 0
        while k < len(idx):
            i = int(idx[k])
            prev = x[idx[:k]]
            prev = prev[np.isfinite(prev)]
            if len(prev) < cfg.fragment_min_prev or not np.isfinite(x[i]):
                k += 1
                continue
            low = float(prev.min())
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                med = float(np.median(np.abs(np.diff(prev))))
            sig = max(cfg.sigma_floor, st.DIFF_TO_SIGMA * med)
            jump = float(x[i]) - low
            if not (
                jump >= math.log(cfg.fragment_ratio)
                and jump >= cfg.fragment_sigmas * sig
                and jump >= cfg.fragment_log_sigmas * log_sigma
            ):
                k += 1
                continue
            band = low + max(cfg.recovery_sigmas * sig, math.log1p(cfg.recovery_rel))
            rest = idx[k + 1 :]
            with np.errstate(invalid="ignore"):
                back = rest[x[rest] <= band]
            rec = int(back[0]) if back.size else -1
            end = rec - 1 if rec >= 0 else int(idx[-1])
            seg = x[i : end + 1]
            peak = i + int(np.nanargmax(seg)) if np.isfinite(seg).any() else i
            events.append(
                loss_spike.SpikeEvent(
                    i, peak, end, rec, float(math.exp(low)), jump / sig, int(idx[-1])
                )
            )
            if rec < 0:
                break
            k = int(np.searchsorted(idx, rec)) + 1
    return events


@pytest.mark.parametrize("min_prev", [1, 2, 4])
def test_fragment_rule_equals_pointwise_reference(min_prev):
    """Short logs with gaps, restarts, NaN, zeros and spikes: the same events, field for field."""
    cfg = dataclasses.replace(loss_spike.DEFAULT, fragment_min_prev=min_prev)
    rng = np.random.default_rng(min_prev)
    found = 0
    for _ in range(400):
        n = int(rng.integers(0, 64))
        steps, x = short_noisy_loss(rng, n)
        restarts = steps[rng.random(n) < 0.05] if rng.random() < 0.5 else None
        got = loss_spike._fragment_events(steps, x, restarts, cfg)
        assert got == _fragment_events_pointwise(steps, x, restarts, cfg)
        found += len(got)
    assert found > 20  # the comparison saw real events, not only empty lists
