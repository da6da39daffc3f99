import numpy as np
import pytest
from detectors_util import decaying, make_run

from stabdiag.detectors import grad_explosion, grad_spike
from stabdiag.findings import Severity, Skipped


def noisy(n=500, seed=0, level=1.0, noise=0.05):
    return level * np.exp(noise * np.random.default_rng(seed).standard_normal(n))


def test_single_moderate_grad_spike_is_info():
    g = noisy()
    g[300] = 5.0
    (f,) = grad_spike.check(make_run(grad_norm=g, loss=decaying(500)))
    assert f.severity == Severity.INFO and f.step_start == 300 and f.evidence["count"] == 1
    assert f.evidence["loss_responded"] is False
    assert 0.9 < f.evidence["healthy_p50"] < 1.1 and f.evidence["healthy_p99"] < 2


def test_repeated_or_huge_grad_spikes_warn():
    g = noisy()
    g[[100, 200, 300]] = 6.0
    (f,) = grad_spike.check(make_run(grad_norm=g))
    assert f.severity == Severity.WARNING and f.evidence["spike_steps"] == [100, 200, 300]
    g = noisy()
    g[250] = 40.0
    (f,) = grad_spike.check(make_run(grad_norm=g))
    assert f.severity == Severity.WARNING


def test_sustained_growth_is_explosion_not_spike():
    g = noisy()
    g[300:] *= 1000
    assert grad_spike.check(make_run(grad_norm=g)) == []
    (f,) = grad_explosion.check(make_run(grad_norm=g))
    assert f.severity == Severity.ERROR and abs(f.step_start - 300) <= 2
    assert f.evidence["growth"] > 500 and f.evidence["until_end"] is True


def test_explosion_then_recovery_reports_span():
    g = noisy()
    g[200:240] *= 50
    (f,) = grad_explosion.check(make_run(grad_norm=g))
    assert abs(f.step_start - 200) <= 2 and 235 <= f.step_end <= 240


@pytest.mark.parametrize("seed", range(4))
def test_healthy_grad_norms_are_quiet(seed):
    rng = np.random.default_rng(seed)
    t = np.arange(1, 3001)
    g = (0.3 + 5 * t**-0.5) * np.exp(0.15 * rng.standard_normal(len(t)))
    run = make_run(grad_norm=g)
    assert grad_spike.check(run) == []
    assert grad_explosion.check(run) == []


def test_warmup_rise_of_grad_norm_is_not_explosion():
    t = np.arange(2000)
    g = np.minimum(1.0, 0.05 + t / 200) * noisy(2000)
    assert grad_explosion.check(make_run(grad_norm=g)) == []


@pytest.mark.parametrize("det", [grad_spike, grad_explosion])
@pytest.mark.parametrize("vals", [[], [1.0], [np.nan] * 40])
def test_edges_skip(det, vals):
    assert isinstance(det.check(make_run(grad_norm=vals)), Skipped)


@pytest.mark.parametrize("det", [grad_spike, grad_explosion])
def test_missing_grad_norm_skips(det):
    res = det.check(make_run(loss=decaying(100)))
    assert isinstance(res, Skipped) and "train/grad_norm" in res.reason


def test_slow_exponential_climb_is_an_explosion() -> None:
    """e^(t/25) never rises 10x above the median of its own last 100 points, yet grows e^12."""
    from stabdiag.detectors import grad_explosion

    rng = np.random.default_rng(3)
    n = 1000
    steps = np.arange(n)
    g = (
        0.5
        * np.exp(rng.normal(0, 0.1, n))
        * np.where(steps >= 700, np.exp((steps - 700) / 25.0), 1.0)
    )
    res = grad_explosion.check(make_run(grad_norm=g))
    assert len(res) == 1
    assert 700 <= res[0].step_start <= 800


def test_step_up_that_stays_is_not_an_isolated_spike() -> None:
    rng = np.random.default_rng(4)
    g = 0.5 * np.exp(0.05 * rng.standard_normal(600))
    g[300:] *= 50.0
    assert grad_spike.check(make_run(grad_norm=g)) == []
    assert len(grad_explosion.check(make_run(grad_norm=g))) == 1


def test_early_grad_spike_is_seen_after_eight_points() -> None:
    rng = np.random.default_rng(6)
    t = np.arange(1, 1001)
    g = (0.5 + 5.0 * np.exp(-t / 50.0)) * np.exp(0.1 * rng.standard_normal(1000))
    g[12] *= 40.0
    res = grad_spike.check(make_run(grad_norm=g))
    assert res and res[0].evidence["spike_steps"] == [12]


def test_short_log_grad_explosion_few_points():
    # 12 pasted points: two an order of magnitude above the rest is an explosion, one is not
    g = np.array([1.0, 1.2, 0.9, 1.1, 1.0, 30.0, 45.0, 1.1, 0.9, 1.0, 1.2, 1.0])
    (f,) = grad_explosion.check(make_run(grad_norm=g))
    assert (f.step_start, f.step_end) == (5, 6) and f.severity == Severity.ERROR
    one = g.copy()
    one[6] = 1.0
    assert grad_explosion.check(make_run(grad_norm=one)) == []
    assert isinstance(grad_explosion.check(make_run(grad_norm=g[:4])), Skipped)


def test_tr8_104b_fragments_grad_explosion_at_8741():
    from detectors_util import real_path

    from stabdiag.sources import load

    res = load([str(real_path("bigscience_chronicles", "tr8-104B-wide"))])
    rd = res.table.run_data(res.runs[0].name)
    (f,) = grad_explosion.check(rd)
    assert f.step_start <= 8741 <= f.step_end and f.evidence["peak_step"] == 8741


def test_grad_spike_loss_responded_agrees_with_loss_spike():
    # stabdiag train --preset tiny --data synthetic (stable): grad 92x and loss 2.9x at step 29,
    # early on a steep descent where a 64-point median baseline lags behind
    from stabdiag.detectors import grad_spike, loss_spike

    x = decaying(300, a=8.0, b=0.5, c=2.0, noise=0.02)
    x[29] *= 2.9
    g = 1.0 + 0.05 * np.random.default_rng(3).standard_normal(300)
    g[29] *= 92
    run = make_run(loss=x, grad_norm=g)
    (ls,) = loss_spike.check(run)
    assert ls.step_start == 29
    (gs,) = grad_spike.check(run)
    assert gs.evidence["max_step"] == 29 and gs.evidence["loss_responded"] is True
    assert "the loss responded" in gs.message
    # and a grad spike the loss ignored still says so
    quiet = make_run(loss=decaying(300, noise=0.01), grad_norm=g)
    (gs,) = grad_spike.check(quiet)
    assert gs.evidence["loss_responded"] is False
