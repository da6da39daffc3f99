"""The > 100k-point fast path of _stats (block medians) agrees with the exact (pandas) path.

Tolerance: the same spike onsets, exactly (spikes are >= 3x, far above either baseline's noise),
and the two baselines within 2 % of each other on the log scale at the median point (a block
median is the same statistic over a window up to one window older).
"""

import numpy as np
from detectors_util import decaying

from stabdiag.detectors import _stats as st
from stabdiag.detectors import grad_spike, loss_spike


def _both(values, fn, monkeypatch):
    st.clear_cache()
    fast = fn(values)
    monkeypatch.setattr(st, "LONG", 10**9)
    st.clear_cache()
    exact = fn(values.copy())
    monkeypatch.undo()
    st.clear_cache()
    return fast, exact


def test_fast_path_finds_the_same_spikes(monkeypatch):
    n = 150_000
    x = decaying(n, noise=0.01)
    spikes = [20_000, 57_321, 90_000, 149_000]
    x[spikes] *= [3, 5, 10, 4]
    fast, exact = _both(x, lambda v: [e.onset for e in loss_spike.find_events(v)], monkeypatch)
    assert fast == exact == spikes
    g = 1.0 + 0.05 * np.random.default_rng(1).standard_normal(n)
    g[spikes] *= 20
    fast, exact = _both(g, lambda v: grad_spike.spike_points(v)[0].tolist(), monkeypatch)
    assert fast == exact == spikes


def test_fast_path_baseline_close_to_exact(monkeypatch):
    x = decaying(150_000, noise=0.01)
    f, e = _both(x, lambda v: st.local_baseline(v, 5, 64, 5, 0.01)[2:], monkeypatch)
    d = np.abs(f[0] - e[0])[st.HEAD :]
    assert np.nanmedian(d) < 0.02 and np.nanmax(d) < 0.1
