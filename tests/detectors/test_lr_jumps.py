"""lr-schedule jumps: an LR spike above the schedule's peak counts; smooth or stepped warm-ups never do."""

import numpy as np
import pytest
from detectors_util import decaying, make_run

from stabdiag.detectors import lr_schedule
from stabdiag.findings import Severity


def _warmup_cosine(n=300, warm=30, peak=3e-3):
    t = np.arange(n)
    lr = np.where(
        t < warm, peak * (t + 1) / warm, 0.5 * peak * (1 + np.cos(np.pi * (t - warm) / (n - warm)))
    )
    return lr


def _jumps(fs):
    return [f for f in fs if f.evidence["issue"] == "lr_jump"]


def test_lr_spike_above_schedule_peak_is_found_and_warns():
    # the sample_runs/lr_spike.jsonl shape: x100 for steps 150-159, loss spikes at 151
    lr = _warmup_cosine()
    lr[150:160] *= 100
    x = decaying(300, noise=0.01)
    x[151:160] *= 2.5
    (f,) = _jumps(lr_schedule.check(make_run(loss=x, lr=lr)))
    assert (f.step_start, f.step_end, f.severity) == (149, 150, Severity.WARNING)
    assert f.evidence["factor"] == pytest.approx(lr[150] / lr[149])
    assert f.evidence["trouble"] == "loss spike" and f.evidence["trouble_step"] == 151
    assert f.evidence["above_schedule_peak"] is True and f.evidence["fell_back_step"] == 160
    assert f.evidence["schedule_peak"] == pytest.approx(3e-3)
    assert "fell back" in f.message and "10 steps later" in f.message


def test_lr_spike_without_trouble_is_info():
    lr = _warmup_cosine()
    lr[150:160] *= 100
    (f,) = _jumps(lr_schedule.check(make_run(loss=decaying(300), lr=lr)))
    assert f.severity == Severity.INFO


def test_lr_spike_during_warmup_above_the_peak_counts():
    lr = _warmup_cosine()
    lr[10:13] *= 50  # 0.0011 -> 0.055, far above the 0.003 peak
    (f,) = _jumps(lr_schedule.check(make_run(loss=decaying(300), lr=lr)))
    assert f.step_end == 10


@pytest.mark.parametrize(
    "lr",
    [
        np.r_[np.linspace(0, 1e-3, 6), np.full(200, 1e-3)],  # linear from 0, coarse
        np.r_[np.linspace(1e-6, 1e-3, 3), np.linspace(1e-3, 1e-4, 200)],  # 3-point warm-up from ~0
        np.r_[1e-6 * 3.0 ** np.arange(7), np.full(200, 1e-6 * 3.0**6)],  # exponential warm-up x3/pt
        np.r_[np.repeat([1e-4, 2e-4, 4e-4], 10), np.full(100, 8e-4), np.full(100, 8e-5)],  # stepped
        np.r_[np.full(20, 3e-4), np.full(300, 3e-3)],  # constant (Goyal) warm-up
        _warmup_cosine(),
    ],
)
def test_smooth_or_stepped_warmup_is_no_jump(lr):
    x = decaying(len(lr))
    assert _jumps(lr_schedule.check(make_run(loss=x, lr=lr))) == []


def test_jump_after_warmup_back_to_peak_still_counts():
    # resumed with the wrong scheduler state: decayed LR back up to the peak (the pre-existing rule)
    lr = np.r_[np.linspace(1e-5, 1e-3, 50), np.full(450, 2e-4), np.full(500, 1e-3)]
    (f,) = _jumps(lr_schedule.check(make_run(loss=decaying(1000), lr=lr)))
    assert f.step_end == 500 and f.evidence["fell_back_step"] is None and "stayed up" in f.message
