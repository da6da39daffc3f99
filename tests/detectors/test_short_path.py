"""The short-series path of _stats (numpy sorts of every window) equals pandas' rolling median.

Bit for bit, not within a tolerance: findings must not change with the path a series takes. The
reference is pandas itself, on random series with NaN, +-Inf, ties, values near the float limit
(an even count's mean overflows the same way) and edge lengths (empty, one point, a window or a
lag longer than the series).
"""

import numpy as np
import pandas as pd
import pytest

from stabdiag.detectors import _stats as st


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
