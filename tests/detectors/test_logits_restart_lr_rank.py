import numpy as np
import pytest
from detectors_util import decaying, make_run, ser

from stabdiag.detectors import (
    attention_logit_growth,
    lr_schedule,
    output_logit_drift,
    rank_divergence,
    restart,
)
from stabdiag.findings import Severity, Skipped
from stabdiag.table import GRAD_NORM, MAX_ATTN_LOGIT, OUTPUT_LOGZ, RESTART, TRAIN_LOSS


def test_attention_logit_growth_past_tau_is_error():
    x = np.geomspace(10, 400, 500)
    (f,) = attention_logit_growth.check(make_run(**{MAX_ATTN_LOGIT: x}))
    assert f.severity == Severity.ERROR and f.evidence["growth"] > 10


def test_attention_logit_grew_then_levelled_is_quiet():
    x = np.r_[np.linspace(5, 40, 200), np.full(300, 40.0)]
    assert attention_logit_growth.check(make_run(**{MAX_ATTN_LOGIT: x})) == []


def test_attention_logit_missing_skips():
    assert isinstance(attention_logit_growth.check(make_run(loss=[1.0] * 30)), Skipped)


def test_output_logz_drift():
    x = np.linspace(10.8, -15, 600)
    (f,) = output_logit_drift.check(make_run(**{OUTPUT_LOGZ: x}))
    assert f.severity == Severity.ERROR and f.evidence["drift"] < -20
    x = np.linspace(10.8, 4.0, 600)
    (f,) = output_logit_drift.check(make_run(**{OUTPUT_LOGZ: x}))
    assert f.severity == Severity.WARNING
    settle = 10.8 - 3 * (1 - np.exp(-np.arange(600) / 30))
    assert output_logit_drift.check(make_run(**{OUTPUT_LOGZ: settle})) == []
    assert isinstance(output_logit_drift.check(make_run()), Skipped)


def test_restart_one_info_per_row():
    run = make_run(loss=decaying(200), **{RESTART: ser([90], [99])})
    (f,) = restart.check(run)
    assert f.severity == Severity.INFO and f.step_start == 90
    assert f.evidence["rewound_from"] == 99 and f.evidence["steps_replayed"] == 10


def test_no_restart_is_no_finding_not_skip():
    assert restart.check(make_run(loss=decaying(50))) == []


def test_several_restarts_or_trouble_warn():
    run = make_run(loss=decaying(2000), **{RESTART: ser([300, 900, 1500], [350, 950, 1550])})
    assert all(f.severity == Severity.WARNING for f in restart.check(run))
    x = decaying(2000)
    x[1000] = np.nan
    (f,) = restart.check(make_run(loss=x, **{RESTART: ser([990], [1010])}))
    assert f.severity == Severity.WARNING and f.evidence["trouble_nearby"] == "non-finite loss"


def test_lr_constant_low_is_silent_and_missing_skips():
    assert lr_schedule.check(make_run(loss=decaying(500), lr=np.full(500, 2e-5))) == []
    assert isinstance(lr_schedule.check(make_run(loss=decaying(50))), Skipped)


def test_lr_no_warmup_high_lr():
    (f,) = lr_schedule.check(make_run(loss=decaying(500), lr=np.full(500, 3e-3)))
    assert f.severity == Severity.INFO and f.evidence["issue"] == "no_warmup"
    x = decaying(500)
    x[20] *= 5
    (f,) = lr_schedule.check(make_run(loss=x, lr=np.full(500, 3e-3)))
    assert f.severity == Severity.WARNING and f.evidence["trouble"] == "loss spike"


def test_lr_warmup_then_decay_is_silent():
    lr = np.r_[np.linspace(1e-5, 3e-3, 50), np.linspace(3e-3, 3e-4, 950)]
    assert lr_schedule.check(make_run(loss=decaying(1000), lr=lr)) == []


def test_lr_jump_lined_up_with_spike_warns():
    lr = np.r_[np.linspace(1e-5, 1e-3, 50), np.full(450, 2e-4), np.full(500, 1e-3)]
    x = decaying(1000)
    x[505] *= 4
    fs = lr_schedule.check(make_run(loss=x, lr=lr))
    (jump,) = [f for f in fs if f.evidence["issue"] == "lr_jump"]
    assert (
        jump.severity == Severity.WARNING
        and jump.step_end == 500
        and jump.evidence["factor"] == pytest.approx(5)
    )


def _ranks(n_ranks, n=300, bad=None, factor=1.0, start=150, seed=0):
    rng = np.random.default_rng(seed)
    base = decaying(n, seed=seed)
    out = {}
    for r in range(n_ranks):
        v = base * (1 + 0.01 * rng.standard_normal(n))
        if r == bad:
            v[start:] *= factor
        out[r] = ser(np.arange(n), v)
    return out


def test_rank_departing_is_named():
    run = make_run(loss=decaying(300), by_rank={TRAIN_LOSS: _ranks(4, bad=2, factor=1.5)})
    (f,) = rank_divergence.check(run)
    assert f.severity == Severity.ERROR and f.evidence["rank"] == 2 and f.step_start == 150
    assert "rank 2" in f.message


def test_rank_nan_on_one_rank():
    ranks = _ranks(4)
    v = ranks[1].values.copy()
    v[200:205] = np.nan
    ranks[1] = ser(ranks[1].steps, v)
    (f,) = rank_divergence.check(make_run(by_rank={GRAD_NORM: ranks}))
    assert f.evidence["rank"] == 1 and f.severity == Severity.WARNING


def test_ranks_agreeing_are_quiet_and_edges():
    assert rank_divergence.check(make_run(by_rank={TRAIN_LOSS: _ranks(8)})) == []
    assert isinstance(rank_divergence.check(make_run(loss=decaying(10))), Skipped)
    assert isinstance(rank_divergence.check(make_run(by_rank={TRAIN_LOSS: _ranks(1)})), Skipped)
    (f,) = rank_divergence.check(make_run(by_rank={TRAIN_LOSS: _ranks(2, bad=1, factor=2.0)}))
    assert f.severity == Severity.WARNING and f.evidence["ranks"] == [0, 1]


# `stabdiag train --preset tiny` max attention logit, every 15th of 300 steps (metrics.csv)
_STABLE_ATTN = [
    0.12,
    0.23,
    1.71,
    1.12,
    3.06,
    4.8,
    3.69,
    5.55,
    6.02,
    7.63,
    6.5,
    6.0,
    9.32,
    8.78,
    10.89,
    9.48,
    12.71,
    9.95,
    12.98,
    10.62,
]
# the same at --lr 0.3 (no qk_norm): every 15th step up to 105, then it levelled off near 55,000
# under the cosine decay
_HOT_ATTN = [0.1, 578.1, 4601.1, 12095.3, 11159.2, 22685.7, 27563.2, 30082.8]


def _curve(knots_steps, knots, n=300, seed=0):
    rng = np.random.default_rng(seed)
    return np.interp(np.arange(n), knots_steps, knots) * (1 + 0.05 * rng.standard_normal(n))


def test_attention_logit_grew_to_absurd_then_plateaued_is_error():
    steps = list(range(0, 120, 15)) + [180, 299]
    x = _curve(steps, _HOT_ATTN + [55000.0, 55000.0])
    (f,) = attention_logit_growth.check(make_run(**{MAX_ATTN_LOGIT: x}))
    assert f.severity == Severity.ERROR
    assert f.evidence["still_rising"] is False and f.evidence["late_level"] > 40000
    assert "levelled off" in f.message and "QK-clip" in f.message


def test_attention_logit_peaked_past_tau_then_fell_is_warning():
    x = _curve([0, 30, 100, 150, 299], [2.0, 2.0, 5000.0, 60.0, 40.0])
    (f,) = attention_logit_growth.check(make_run(**{MAX_ATTN_LOGIT: x}))
    assert f.severity == Severity.WARNING and f.evidence["peak_level"] > 1000


def test_attention_logit_healthy_tiny_runs_are_quiet():
    stable = _curve(list(range(0, 300, 15)), _STABLE_ATTN)
    assert attention_logit_growth.check(make_run(**{MAX_ATTN_LOGIT: stable})) == []
    # healthy, slowly rising all the way to ~30 (longer run): still quiet
    rising = stable * np.linspace(1.0, 2.5, 300)
    assert attention_logit_growth.check(make_run(**{MAX_ATTN_LOGIT: rising})) == []


def test_attention_logits_that_overflow_after_few_points_are_an_error():
    """The unstable recipe's run: 13 finite points from 0.1 to 15760, then Inf (fp16 overflow)."""
    from stabdiag.detectors import attention_logit_growth

    x = np.array(
        [0.1, 0.5, 3, 40, 300, 900, 1800, 4000, 5400, 7200, 9600, 14600, 15760] + [np.inf] * 20
    )
    (f,) = attention_logit_growth.check(make_run(**{"train/max_attn_logit": x}))
    assert f.severity.label == "error" and f.step_end == 13
    healthy = np.array([0.1, 2, 4, 6, 7] + [np.nan] * 3)
    assert isinstance(
        attention_logit_growth.check(make_run(**{"train/max_attn_logit": healthy})), Skipped
    )


def test_attention_logit_growth_starts_where_it_crossed_tau():
    from stabdiag.detectors import attention_logit_growth

    x = np.concatenate([np.full(50, 5.0), np.geomspace(5, 3000, 50), np.full(100, 3000.0)])
    (f,) = attention_logit_growth.check(make_run(**{"train/max_attn_logit": x}))
    assert 50 < f.step_start < 100 and f.step_end == 199
