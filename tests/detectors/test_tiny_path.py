"""The plain-float paths for series of at most ``_stats.TINY`` points equal their references bit
for bit: pandas for rolling medians and the cumulative minimum, numpy for medians, percentiles and
log intervals, and the array path of the causal baselines (itself pinned to pandas in
test_short_path). Findings must not depend on the path a series takes (issue 13 R4).

Random series of every length up to TINY with NaN, +-Inf, exact zeros, negatives, ties and values
near the float limit. Compared with ``np.array_equal(..., equal_nan=True)`` / ``==``: a sorted
list and numpy's partition may order -0.0 and 0.0 differently, so only the sign of a zero median
is left open (none of the detectors' inputs to these helpers carries a -0.0: they are absolute
differences, logs of positive values or cleaned losses).
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
    x[(u >= 0.1) & (u < 0.14)] = np.inf
    x[(u >= 0.14) & (u < 0.18)] = -np.inf
    x[(u >= 0.18) & (u < 0.24)] = 0.0
    if rng.random() < 0.3:
        x = np.round(x)  # ties
    if rng.random() < 0.3:
        x = np.abs(x)  # a ratio-scale series (no negatives)
    return x


def _same(a, b):
    return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)


def test_list_rolling_median_equals_pandas():
    rng = np.random.default_rng(21)
    for _ in range(3000):
        n = int(rng.integers(0, st.TINY + 1))
        w = int(rng.integers(1, 90))
        mp = int(rng.integers(0, w + 1))
        lag = int(rng.integers(0, 6))
        x = _series(rng, n)
        ref = pd.Series(x).shift(lag).rolling(w, min_periods=mp).median().to_numpy()
        assert _same(st.trailing_median(x, w, mp, lag), ref), (n, w, mp, lag)
        center = bool(rng.integers(0, 2))
        ref = pd.Series(x).rolling(w, min_periods=1, center=center).median().to_numpy()
        assert _same(st.rolling_median(x, w, center), ref), (n, w, center)


def test_tiny_path_is_taken_for_short_series(monkeypatch):
    """The list path is what runs at TINY points and below (and not above)."""
    calls = []
    real = st._rolling_median_list
    monkeypatch.setattr(st, "_rolling_median_list", lambda *a: calls.append(len(a[0])) or real(*a))
    st.trailing_median(np.arange(st.TINY, dtype=float), 5, 1, 1)
    st.trailing_median(np.arange(st.TINY + 1, dtype=float), 5, 1, 1)
    assert calls == [st.TINY]


@pytest.mark.parametrize("which", ["local", "median"])
def test_causal_baselines_equal_the_array_path(monkeypatch, which):
    rng = np.random.default_rng(5 if which == "local" else 6)
    cases = []
    for _ in range(1500):
        n = int(rng.integers(0, st.TINY + 1))
        w = int(rng.integers(2, 130))
        args = (int(rng.integers(1, 10)), w, int(rng.integers(0, w + 1)))
        floor = float(rng.choice([0.0, 0.01, 0.05]))
        cases.append((_series(rng, n), args, floor))

    def run():
        out = []
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for x, (lw, w, mp), floor in cases:
                if which == "local":
                    out.append(st.causal_local_sigma(x, lw, w, mp, floor))
                else:
                    out.append(st.causal_median_sigma(x, w, mp, floor))
        return out

    fast = run()
    monkeypatch.setattr(st, "TINY", -1)  # every series through the array path
    slow = run()
    for (x, args, floor), f, s in zip(cases, fast, slow, strict=True):
        assert _same(f[0], s[0]) and _same(f[1], s[1]), (len(x), args, floor)


def test_medians_and_percentiles_equal_numpy():
    rng = np.random.default_rng(8)
    for _ in range(1500):
        n = int(rng.integers(0, st.TINY + 1))
        x = _series(rng, n)
        fin = x[np.isfinite(x)]
        ref = float(np.median(fin)) if fin.size else np.nan
        assert _same(st.nanmedian(x), ref), x
        ref = (
            float(st.MAD_TO_SIGMA * np.median(np.abs(fin - np.median(fin)))) if fin.size else np.nan
        )
        assert _same(st.robust_sigma(x), ref), x
        if fin.size:
            for q in (0, 25, 50, 90, 99, 100, float(rng.random() * 100)):
                assert st.percentile(fin, q) == float(np.percentile(fin, q)), (fin, q)


def test_log_interval_equals_numpy():
    rng = np.random.default_rng(9)
    for _ in range(3000):
        n = int(rng.integers(0, st.TINY + 1))
        gaps = rng.choice([1, 1, 2, 5, 10, 100, 0], n)
        steps = np.cumsum(gaps).astype(np.int64) - int(rng.integers(0, 1000))
        ref = 1 if n < 2 else max(1, int(np.median(np.diff(steps))))
        assert st.log_interval(steps) == ref, steps


def test_lowest_before_equals_pandas_cummin_shift():
    rng = np.random.default_rng(10)
    for _ in range(3000):
        x = _series(rng, int(rng.integers(1, 200)))
        ref = pd.Series(x).cummin().shift(1).to_numpy()
        assert _same(loss_spike._lowest_before(x), ref), x


def test_fragment_rule_list_path_equals_array_path(monkeypatch):
    """Short logs with gaps, restarts, NaN, zeros and spikes: the plain-float fragment rule finds
    the same events, field for field, as the array version (pinned to the pointwise reference in
    test_short_path)."""
    cfgs = [
        dataclasses.replace(loss_spike.DEFAULT, fragment_min_prev=m, sigma_floor=f)
        for m in (0, 1, 2, 4)
        for f in (0.01, 0.001)
    ]
    rng = np.random.default_rng(12)
    cases = []
    for _ in range(500):
        n = int(rng.integers(0, st.TINY + 1))
        steps, x = short_noisy_loss(rng, n)
        if rng.random() < 0.2:
            x = np.round(x, 1)  # ties
        restarts = steps[rng.random(n) < 0.05] if rng.random() < 0.5 else None
        cases.append((steps, x, restarts, cfgs[int(rng.integers(0, len(cfgs)))]))

    def run():
        with np.errstate(all="ignore"):
            return [loss_spike._fragment_events(*c) for c in cases]

    fast = run()
    monkeypatch.setattr(st, "TINY", -1)
    slow = run()
    assert fast == slow
    assert sum(map(len, fast)) > 50  # real events were compared, not only empty lists
