"""Judgement rules of issue 12 on curves built to the rule: runaway, mid-run rise with its onset,
which series is the loss, fp16 probing vs real overflow, not-judged runs."""

from __future__ import annotations

import numpy as np
from detectors_util import decaying, make_run, ser

from stabdiag.detectors import divergence, fp16_overflow, loss_spike, nonfinite, stall
from stabdiag.findings import Severity
from stabdiag.loss_choice import choose
from stabdiag.table import GRAD_NORM, LOSS_SCALE, SKIPPED_STEP, TRAIN_LOSS, VAL_LOSS


def _chaotic_run(n: int = 500, seed: int = 0):
    """Loss ~10 that goes chaotic (x1-x60 jumps) from point 30 while a cosine LR is high, and
    settles when the LR has decayed below a tenth of its peak."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    lr = 0.5 * (1 + np.cos(np.pi * t / n))
    base = 10.0 * np.exp(-t / 60) + 4.0
    chaos = (t >= 30) & (lr > 0.1)
    loss = base * np.where(chaos, np.exp(rng.uniform(0, 4.0, n)), 1.0)
    return make_run(loss=loss, lr=lr), lr


def test_runaway_that_settles_only_at_lr_decay_is_an_error_with_the_lr_named():
    run, lr = _chaotic_run()
    (f,) = divergence.check(run)
    assert f.severity == Severity.ERROR and f.evidence["rule"] == "runaway"
    assert f.evidence["chaotic"] is True and f.evidence["recovered_step"] is not None
    assert "when the LR had decayed to" in f.message
    assert lr[f.evidence["recovered_step"]] <= 0.5 * lr.max()
    assert abs(f.step_start - 30) <= 10  # the onset is where it left, not where a bar was crossed


def test_short_runaway_is_a_warning_even_if_it_comes_back():
    x = decaying(2000, noise=0.005)
    x[600:760] = x[0] * 1.8 * (1 + np.linspace(0, 0.5, 160))  # far above the start, then back
    run = make_run(loss=x)
    found = divergence.check(run) + [f for f in loss_spike.check(run) if f.step_start <= 620]
    assert found and max(f.severity for f in found) == Severity.WARNING  # said once, as a warning
    assert len([f for f in found if f.step_start <= 620]) == 1


def test_mid_run_rise_that_recovers_is_found_with_its_onset():
    rng = np.random.default_rng(1)
    x = np.r_[
        np.linspace(6, 4, 100),
        np.linspace(4, 4.8, 400),
        np.full(600, 4.8),
        np.linspace(4.8, 3.0, 900),
    ]
    x = x * (1 + 0.01 * rng.standard_normal(len(x)))
    (f,) = divergence.check(make_run(loss=x))
    assert f.severity == Severity.WARNING and f.evidence["rule"] == "rise"
    assert f.evidence["recovered"] is True
    assert abs(f.step_start - 100) <= 25, (
        f.step_start
    )  # within a few log intervals of the true onset


def test_val_only_run_is_judged_on_the_validation_loss():
    x = np.r_[np.linspace(8, 4, 50), np.linspace(4, 6, 100)]
    (f,) = divergence.check(make_run(val_loss=x))
    assert f.metric == VAL_LOSS and "validation loss" in f.message


def test_healthy_noisy_curve_gets_no_divergence():
    for seed in range(5):
        assert divergence.check(make_run(loss=decaying(3000, seed=seed, noise=0.05))) == []


def test_loss_choice_rules():
    s = ser(range(5), [5, 4, 3, 2, 1])
    only = make_run(**{"my_objective": s})
    run, ch = choose(only)
    assert (
        ch.metric == TRAIN_LOSS and ch.series == "my_objective" and run.get(TRAIN_LOSS) is not None
    )
    parts = {
        "a_loss": ser(range(4), [1, 2, 3, 4]),
        "b_loss": ser(range(4), [3, 2, 1, 0]),
        "mean_loss": ser(range(4), [2, 2, 2, 2]),
    }
    run, ch = choose(make_run(**parts))
    assert ch.series == "mean_loss" and "mean" in ch.why
    run, ch = choose(
        make_run(**{"x_loss": ser(range(3), [1, 1, 1]), "y_loss": ser(range(3), [2, 2, 2])})
    )
    assert ch.series == "x_loss + y_loss" and list(run.get(TRAIN_LOSS).values) == [3, 3, 3]
    run, ch = choose(make_run(**{"val_loss": ser(range(3), [3, 2, 1]), "val_acc_loss_scale": s}))
    assert ch.metric == VAL_LOSS
    run, ch = choose(make_run(**{"eval_ppl": ser(range(3), [np.e, np.e**2, 1.0])}))
    assert ch.metric == VAL_LOSS and np.allclose(run.get(VAL_LOSS).values, [1, 2, 0])
    assert choose(make_run(**{"accuracy": s}))[1] is None


def _sawtooth(n_cycles: int = 30, period: int = 100, first: int = 0):
    steps, vals = [first], [65536.0]
    for k in range(n_cycles):  # grows to 2x after a window, overflows back: a DeepSpeed sawtooth
        s0 = first + 200 + k * period
        steps += [s0, s0 + 1]
        vals += [131072.0, 65536.0]
    return steps, vals


def test_sawtooth_at_a_steady_scale_is_benign_at_any_frequency():
    steps, vals = _sawtooth(period=20)
    sk_steps = [s for s, v in zip(steps[1:], vals[1:], strict=True) if v == 65536.0]
    run = make_run(
        **{LOSS_SCALE: ser(steps, vals), SKIPPED_STEP: ser(sk_steps, np.ones(len(sk_steps)))}
    )
    (f,) = fp16_overflow.check(run)
    assert (
        f.severity == Severity.INFO
        and f.evidence["probes"] == 30
        and f.evidence["real_overflows"] == 0
    )


def test_fragment_starting_mid_run_has_no_startup_and_real_overflows_warn():
    steps = [29000, 29010, 29020, 29030, 29040, 29050]
    vals = [32768, 32768, 32768, 65536, 8192, 4096]
    (f,) = fp16_overflow.check(make_run(**{LOSS_SCALE: ser(steps, vals)}))
    assert f.severity == Severity.WARNING and f.step_start == 29040
    assert "start-up" not in f.message


def test_collapse_to_the_minimum_is_an_error():
    steps = list(range(0, 2000, 10))
    vals = [65536.0] * 100 + [2.0 ** (15 - k) for k in range(16)] + [1.0] * 84
    (f,) = fp16_overflow.check(make_run(**{LOSS_SCALE: ser(steps, vals)}))
    assert f.severity == Severity.ERROR


def test_isolated_nonfinite_grad_norms_in_an_fp16_run_are_skipped_steps():
    g = np.full(1000, 1.0)
    g[[300, 700]] = np.inf
    run = make_run(loss=decaying(1000), grad_norm=g)
    run = type(run)(name=run.name, series=run.series, meta={"precision": "fp16"})
    (f,) = [f for f in nonfinite.check(run) if f.metric == GRAD_NORM]
    assert f.severity == Severity.INFO and "skipped" in f.message


def _flat_after(n: int, k: int, level: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.r_[np.linspace(5.5, level, k), np.full(n - k, level)]
    return x + 0.1 * rng.standard_normal(n)


def test_flat_from_early_with_the_lr_still_high_and_val_flat_is_a_stall():
    n = 300
    lr = 3e-3 * (0.55 + 0.45 * np.cos(np.pi * np.arange(n) / n))
    val = ser([49, 99, 149, 199, 249, 299], [3.36, 3.36, 3.35, 3.34, 3.34, 3.35])
    run = make_run(loss=_flat_after(n, 30, 3.2), lr=lr, val_loss=val)
    (f,) = stall.check(run)
    assert f.severity == Severity.ERROR and {"lr_still_high", "val_flat"} <= set(
        f.evidence["signals"]
    )
    assert f.step_start <= 60


def test_a_plateau_reached_as_the_lr_decays_is_not_a_stall():
    n = 300
    lr = 3e-3 * np.r_[np.linspace(1, 0.05, 15), np.full(n - 15, 0.05)]
    val = ser([49, 99, 149, 199, 249, 299], [3.36, 3.36, 3.35, 3.34, 3.34, 3.35])
    assert stall.check(make_run(loss=_flat_after(n, 30, 3.2), lr=lr, val_loss=val)) == []
    # and a loss that keeps improving at a high LR is not flat
    lr_hi = np.full(n, 3e-3)
    improving = np.linspace(5.5, 2.0, n) + 0.05 * np.random.default_rng(0).standard_normal(n)
    assert stall.check(make_run(loss=improving, lr=lr_hi)) == []


def test_every_engine_scaler_is_judged_on_its_own_chain():
    actor = ser([0, 100, 101, 300, 301], [65536, 131072, 65536, 131072, 65536])
    critic = ser([0, 50, 51, 52, 53], [65536, 65536, 32768, 8192, 1024])  # a cascade at 51-53
    run = make_run(**{LOSS_SCALE: actor, "critic/loss_scale": critic})
    fs = fp16_overflow.check(run)
    by = {f.metric: f for f in fs}
    assert by[LOSS_SCALE].severity == Severity.INFO
    crit = by["critic/loss_scale"]
    assert crit.severity == Severity.WARNING and crit.message.startswith("critic engine:")


def test_two_ranks_name_the_one_that_moved_from_its_own_level():
    from stabdiag.detectors import rank_divergence

    base = decaying(200, seed=3, noise=0.01)
    bad = base.copy()
    bad[120:140] *= 2.5  # rank 1 alone goes bad for 20 points
    run = make_run(
        loss=base, by_rank={"train/loss": {0: ser(range(200), base), 1: ser(range(200), bad)}}
    )
    (f,) = [f for f in rank_divergence.check(run) if f.metric == TRAIN_LOSS]
    assert f.evidence["rank"] == 1 and f.message.startswith("rank 1's loss departed")
