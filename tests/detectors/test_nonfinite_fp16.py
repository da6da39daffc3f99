import numpy as np
from detectors_util import decaying, make_run

from stabdiag.detectors import fp16_overflow, nonfinite
from stabdiag.findings import Severity, Skipped
from stabdiag.table import LOSS_SCALE, SKIPPED_STEP


def test_nan_loss_is_error_with_evidence():
    x = decaying(200)
    x[150:] = np.nan
    (f,) = nonfinite.check(make_run(loss=x))
    assert f.severity == Severity.ERROR and f.step_start == 150
    assert f.evidence["count"] == 50 and f.evidence["fraction"] == 0.25


def test_fp16_overflow_nan_grad_norm_is_excused():
    g = np.ones(300)
    g[[3, 4, 200]] = np.nan
    skipped = np.zeros(300)
    skipped[[3, 4, 200]] = 1
    run = make_run(loss=decaying(300), grad_norm=g, **{SKIPPED_STEP: skipped})
    assert nonfinite.check(run) == []


def test_isolated_nan_grad_norm_outside_fp16_is_warning_when_loss_healthy():
    g = np.ones(300)
    g[100] = np.nan
    (f,) = nonfinite.check(make_run(loss=decaying(300), grad_norm=g))
    assert f.severity == Severity.WARNING and f.metric == "train/grad_norm"


def test_repeated_nan_grad_norm_is_error():
    g = np.ones(300)
    g[100:110] = np.inf
    (f,) = nonfinite.check(make_run(loss=decaying(300), grad_norm=g))
    assert f.severity == Severity.ERROR and "+inf" in f.evidence["values"]


def test_clean_and_missing():
    assert nonfinite.check(make_run(loss=decaying(100))) == []
    assert isinstance(nonfinite.check(make_run(lr=[1.0, 2.0])), Skipped)


def _scale(n, drops_at=(), start=65536.0):
    s = np.full(n, start)
    for d in drops_at:
        s[d:] /= 2
    return s


def test_startup_scale_search_is_info():
    run = make_run(**{LOSS_SCALE: _scale(5000, drops_at=(1, 2, 3, 4, 5))})
    (f,) = fp16_overflow.check(run)
    assert f.severity == Severity.INFO and "start-up" in f.message


def test_periodic_probing_is_info():
    s = _scale(10000, drops_at=(1, 2, 3))
    for k in range(2000, 10000, 2000):  # grows then overflows right away
        s[k] *= 2
    (f,) = fp16_overflow.check(make_run(**{LOSS_SCALE: s}))
    assert f.severity == Severity.INFO


def test_collapsing_scale_is_error():
    s = _scale(5000, drops_at=(1, 2, *range(2000, 2040, 2)))
    (f,) = fp16_overflow.check(make_run(**{LOSS_SCALE: s}))
    assert f.severity == Severity.ERROR and f.evidence["min_scale"] <= 1.0


def test_clustered_skips_mid_run_warn():
    sk = np.zeros(5000)
    sk[[2500, 2510, 2530, 2560, 2590]] = 1
    (f,) = fp16_overflow.check(make_run(**{SKIPPED_STEP: sk}))
    assert f.severity == Severity.WARNING and f.evidence["skipped_steps"] == 5


def test_no_scaler_and_bf16_constant():
    assert fp16_overflow.check(make_run(**{LOSS_SCALE: np.full(100, -1.0)})) == [] or isinstance(
        fp16_overflow.check(make_run(**{LOSS_SCALE: np.full(100, -1.0)})), Skipped
    )
    assert fp16_overflow.check(make_run(**{LOSS_SCALE: np.ones(100)})) == []
    assert isinstance(fp16_overflow.check(make_run(loss=decaying(100))), Skipped)


def test_percentages_and_plurals_read_well():
    from stabdiag.detectors import _stats as st

    assert [st.pct(f) for f in (1.0, 0.9999, 0.526, 0.053, 0.0027, 0.00001, 0.0)] == [
        "100%",
        "99.9%",
        "52.6%",
        "5.3%",
        "0.27%",
        "<0.01%",
        "0%",
    ]
    from stabdiag.words import count

    assert (count(1, "step"), count(2, "step"), count(0, "step")) == (
        "1 step",
        "2 steps",
        "0 steps",
    )
    assert (
        count(1, "drop or skip", "drops or skips"),
        count(3, "drop or skip", "drops or skips"),
    ) == ("1 drop or skip", "3 drops or skips")
    # every point NaN: 100%, not "1e+02%"
    (f,) = nonfinite.check(make_run(loss=np.full(10, np.nan)))
    assert "(100%)" in f.message and "e+02" not in f.message
