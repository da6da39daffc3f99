"""stabdiag.live.Monitor in a plain PyTorch loop, and the incremental state under it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import stabdiag
from stabdiag.detectors import run_detectors
from stabdiag.errors import ConfigError
from stabdiag.live import FINDINGS_FILE, LiveRun, Monitor, SeriesBuffer, Tracker
from stabdiag.table import RunData, Series


def _curve(n, seed=0, noise=0.02):
    rng = np.random.default_rng(seed)
    return 3 * np.exp(-np.arange(n) / 80) + 1 + noise * rng.standard_normal(n)


def test_series_buffer_last_write_wins_like_the_table():
    b = SeriesBuffer(capacity=2)
    b.extend([0, 1, 2, 3], [1.0, 2.0, 3.0, 4.0])
    b.append(2, 9.0)  # a rewritten step (resume): the later value wins
    b.extend([4, 5], [5.0, 6.0])
    s = b.series()
    assert s.steps.tolist() == [0, 1, 2, 3, 4, 5]
    assert s.values.tolist() == [1.0, 2.0, 9.0, 4.0, 5.0, 6.0]
    assert b.tail(2).steps.tolist() == [4, 5]


def test_live_run_marks_a_rewind_between_pieces_as_a_restart():
    r = LiveRun("r")
    r.add_run_data(RunData("r", {"train/loss": Series(np.arange(10), np.ones(10))}))
    r.add_run_data(RunData("r", {"train/loss": Series(np.arange(5, 8), np.ones(3))}))
    d = r.run_data()
    assert d.series["meta/restart"].steps.tolist() == [5]
    assert d.series["meta/restart"].values.tolist() == [9.0]


def test_tracker_reports_each_finding_once_and_equals_run_detectors():
    loss = _curve(300)
    loss[150] *= 5
    t = Tracker()
    seen = []
    for n in range(20, 301, 20):
        run = RunData("r", {"train/loss": Series(np.arange(n), loss[:n].copy())})
        seen += [(e.change, e.finding.kind, e.finding.step_start) for e in t.update([run])]
    assert seen.count(("new", "loss-spike", 150)) == 1
    offline, _ = run_detectors([RunData("r", {"train/loss": Series(np.arange(300), loss.copy())})])
    assert [f.to_dict() for f in t.findings] == [f.to_dict() for f in offline]


def test_monitor_is_exported_lazily_and_rejects_bad_options():
    assert not hasattr(stabdiag, "Monitor")  # from stabdiag.live import Monitor (issue 16)
    with pytest.raises(ConfigError, match="action"):
        Monitor(action="explode")
    with pytest.raises(ConfigError, match="unknown keyword"):
        Monitor().log(0, los=1.0)


def test_monitor_stops_soon_after_a_spike_that_does_not_recover(tmp_path):
    loss = _curve(400)
    loss[250:] *= 4  # jumps and stays up: the run derailed
    m = Monitor(action="stop", out_dir=tmp_path)
    stopped = None
    for step, x in enumerate(loss):
        if m.log(step, loss=float(x), lr=1e-3).stop:
            stopped = step
            break
    assert m.stop_finding.severity.label == "error"
    assert m.stop_finding.kind in ("loss-spike", "divergence")  # whichever calls it an error first
    assert 250 <= stopped <= 250 + 5
    rows = [json.loads(x) for x in (tmp_path / FINDINGS_FILE).read_text().splitlines()]
    first = next(r for r in rows if r["kind"] == "loss-spike")
    assert (first["change"], first["severity"], first["step_start"]) == ("new", "warning", 250)


def test_monitor_nan_checks_at_once():
    m = Monitor(action="stop", check_every=10_000)  # the schedule alone would never check
    for step, x in enumerate(_curve(50)):
        m.log(step, loss=float(x))
    v = m.log(50, loss=math.nan)
    assert v.stop and m.stop_finding.kind == "nonfinite"


torch = pytest.importorskip("torch")


def _loop(action, poison, steps=120, max_skips=3):
    from live_util import Bigram, batch

    model = Bigram()
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    m = Monitor(action=action, max_skips=max_skips)
    applied = []
    for step in range(steps):
        loss = model(batch(step, poison))
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        v = m.log(step, loss=loss.item(), grad_norm=gn.item(), lr=3e-2)
        if v.skip:
            opt.zero_grad()
            continue
        opt.step()
        opt.zero_grad()
        applied.append(step)
    m.close()
    return m, applied


def test_plain_loop_skips_the_poisoned_step():
    m, applied = _loop("skip", frozenset({80}))
    assert m.skipped_steps == [80]
    assert 80 not in applied and len(applied) == 119
    assert [f.step_start for f in m.findings if f.kind == "loss-spike"] == [80]


def test_skips_are_capped_when_the_loss_stays_up():
    m, applied = _loop("skip", frozenset(range(80, 90)), max_skips=3)
    # three in a row, then the poisoned steps 83-89 go through: a loss that stays up is not a
    # bad batch to hide (what the model learnt from them may spike later healthy steps: counted)
    assert [s for s in m.skipped_steps if s < 90] == [80, 81, 82]
    assert set(range(83, 90)) <= set(applied)


def test_tensor_values_wait_for_one_host_transfer():
    m = Monitor(check_every=25)
    for step, x in enumerate(_curve(60)):
        m.log(step, loss=torch.tensor(float(x)))
    assert len(m._pending) == 10  # 50 moved at the two checks, the rest still on the device
    m.close()
    assert m.run.metrics["train/loss"].n == 60 and not m._pending
