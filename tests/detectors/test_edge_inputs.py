"""Edge inputs (NaN, zeros, +-Inf, constants, one point, negative, huge) never raise and never emit
numpy RuntimeWarnings, in any detector; zero grad norms never give infinite ratios."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from detectors_util import make_run, ser

from stabdiag.detectors import DETECTORS, grad_spike
from stabdiag.table import (
    GRAD_NORM,
    LOSS_SCALE,
    LR,
    MAX_ATTN_LOGIT,
    OUTPUT_LOGZ,
    SKIPPED_STEP,
    TRAIN_LOSS,
    VAL_LOSS,
)

METRICS = (
    TRAIN_LOSS,
    VAL_LOSS,
    GRAD_NORM,
    LR,
    LOSS_SCALE,
    SKIPPED_STEP,
    MAX_ATTN_LOGIT,
    OUTPUT_LOGZ,
)


def _edge_cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    n = 300
    noisy = 2.0 + 0.1 * rng.standard_normal(n)
    cases = {
        "all_nan": np.full(n, np.nan),
        "all_zero": np.zeros(n),
        "constant": np.full(n, 3.0),
        "all_inf": np.full(n, np.inf),
        "one_point": np.array([1.0]),
        "two_points": np.array([1.0, np.nan]),
        "negative": -noisy,
        "huge": noisy * 1e300,
        "tiny": noisy * 1e-300,
    }
    mixed = noisy.copy()
    mixed[::7] = 0.0
    mixed[::11] = np.nan
    mixed[::13] = np.inf
    mixed[::17] = -np.inf
    cases["mixed"] = mixed
    zeros_then_spike = np.zeros(n)
    zeros_then_spike[150] = 1.72e4
    cases["zeros_one_value"] = zeros_then_spike
    short = np.array([0.0, 5.0, 0.0, 0.0, 7.0, 0.0, 1e9, 0.0, np.nan, 2.0])
    cases["short_zeros"] = short
    return cases


@pytest.mark.parametrize("case", sorted(_edge_cases()))
def test_no_runtime_warnings_on_edge_inputs(case):
    vals = _edge_cases()[case]
    run = make_run(**{m: vals for m in METRICS})
    ranks = {
        m: {r: ser(np.arange(len(vals)), vals * (1 + r)) for r in range(3)}
        for m in (TRAIN_LOSS, GRAD_NORM)
    }
    run_r = make_run(by_rank=ranks, **{m: vals for m in METRICS})
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for det in DETECTORS:
            for r in (run, run_r):
                res = det.check(r)
                for f in res if isinstance(res, list) else ():
                    assert "infx" not in f.message and "nanx" not in f.message, f.message


def test_zero_grad_norm_baseline_is_missing_not_zero():
    # tr1-13B-base style: a grad norm logged as exactly 0 around a real value must not give an
    # "infx its baseline (0 -> ...)" spike
    rng = np.random.default_rng(1)
    g = np.exp(0.1 * rng.standard_normal(200))
    g[::3] = 0.0
    g[120] = 50.0
    run = make_run(loss=np.full(200, 2.0), grad_norm=g)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        res = grad_spike.check(run)
    assert len(res) == 1
    ev = res[0].evidence
    assert ev["baseline_at_max"] > 0.5 and math.isfinite(ev["max_ratio"]) and ev["max_ratio"] > 10
    assert "inf" not in res[0].message
