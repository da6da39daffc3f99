import math

import numpy as np
import pytest
from detectors_util import decaying, make_run, ser

from stabdiag.detectors import divergence, stall
from stabdiag.findings import Severity, Skipped
from stabdiag.table import VAL_LOSS


def test_diverging_run_is_error_with_onset():
    x = decaying(1000)
    x[600:] += np.linspace(0, 6, 400)
    (f,) = divergence.check(make_run(loss=x))
    assert f.severity == Severity.ERROR and 550 <= f.step_start <= 800
    assert f.evidence["best_level"] < f.evidence["end_level"]


def test_ends_above_start_is_error():
    x = np.r_[np.linspace(5, 4, 100), np.linspace(4, 9, 300)]
    (f,) = divergence.check(make_run(loss=x))
    assert f.severity == Severity.ERROR and f.evidence["ends_above_start"] is True


def test_partial_rise_is_warning():
    x = decaying(1000, noise=0.002)  # 8*t^-0.3+2: from ~9 to ~2.8
    x[700:] += np.linspace(0, 2.5, 300)
    (f,) = divergence.check(make_run(loss=x))
    assert f.severity in (Severity.WARNING, Severity.ERROR)


@pytest.mark.parametrize("seed", range(4))
def test_healthy_and_noisy_curves_do_not_diverge(seed):
    assert divergence.check(make_run(loss=decaying(3000, seed=seed, noise=0.03))) == []
    rng = np.random.default_rng(seed)
    noisy = np.exp(np.log(0.077) + 0.8 * rng.standard_normal(10000))  # diffusion-like
    assert divergence.check(make_run(loss=noisy)) == []


def test_warmup_rise_then_fall_is_not_divergence():
    x = np.r_[np.linspace(10, 11, 30), decaying(970) + 0.5]
    assert divergence.check(make_run(loss=x)) == []


def test_overfitting_is_info_not_divergence():
    train = np.geomspace(1.0, 2e-4, 200)
    run = make_run(
        loss=train,
        steps=np.arange(200) * 25,
        **{VAL_LOSS: ser([1000, 2000, 3000, 4000, 5000], [0.321, 0.35, 0.38, 0.40, 0.42])},
    )
    (f,) = divergence.check(run)
    assert f.severity == Severity.INFO and f.metric == VAL_LOSS and "overfitting" in f.message


def test_divergence_edges():
    assert isinstance(divergence.check(make_run(grad_norm=[1.0] * 30)), Skipped)
    assert isinstance(divergence.check(make_run(loss=[1.0, 2.0])), Skipped)


def lion_like(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    loss = np.where(t < 300, 0.91 - (0.91 - math.log(2)) * t / 300, math.log(2))
    loss = loss + np.where(t < 300, 0.05, 0.001) * rng.standard_normal(n)
    g = np.where(t < 400, 13.0, 0.13) * np.exp(0.3 * rng.standard_normal(n))
    return loss, g


def test_stall_at_ln2_with_grad_collapse_is_error():
    loss, g = lion_like()
    (f,) = stall.check(make_run(loss=loss, grad_norm=g))
    assert f.severity == Severity.ERROR and f.evidence["chance_level"] == "ln 2"
    assert "grad_collapse" in f.evidence["signals"] and f.step_start < 1000


def test_stall_without_grad_norm_still_found():
    loss, _ = lion_like()
    (f,) = stall.check(make_run(loss=loss))
    assert f.severity >= Severity.WARNING


@pytest.mark.parametrize("seed", range(3))
def test_converged_plateau_and_cosine_tail_are_not_stalls(seed):
    assert stall.check(make_run(loss=decaying(3000, seed=seed, noise=0.02))) == []
    rng = np.random.default_rng(seed)
    t = np.arange(2000)
    ft = (
        1.2 + 0.8 * np.exp(-t / 100) + 0.05 * rng.standard_normal(2000)
    )  # LoRA fine-tune that converged
    assert stall.check(make_run(loss=ft, grad_norm=1 + 0.1 * rng.random(2000))) == []


def test_stall_edges():
    assert isinstance(stall.check(make_run(loss=[0.69] * 5)), Skipped)
    assert isinstance(stall.check(make_run()), Skipped)
