"""Baseline comparison on pairs of hand-built runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stabdiag.compare import CompareError, Thresholds, compare_reports
from stabdiag.findings import Finding, Severity
from stabdiag.render.compare import render_comparison_json, render_comparison_text
from stabdiag.report import Report, RunSummary
from stabdiag.table import GRAD_NORM, TRAIN_LOSS, MetricsTable


def _report(
    name: str,
    loss: np.ndarray,
    grad: np.ndarray | None = None,
    *,
    start: int = 0,
    findings: tuple[Finding, ...] = (),
) -> Report:
    steps = np.arange(start, start + len(loss))
    parts = [MetricsTable.from_records(name, steps, [TRAIN_LOSS] * len(loss), loss, source="t")]
    if grad is not None:
        parts.append(
            MetricsTable.from_records(name, steps, [GRAD_NORM] * len(grad), grad, source="t")
        )
    table = MetricsTable.concat(parts)
    run = RunSummary(
        name=name,
        path=name,
        format="csv",
        steps=(int(steps[0]), int(steps[-1])),
        metrics=tuple(table.metrics(name)),
    )
    return Report(runs=(run,), findings=findings, skipped=(), remedies=(), table=table, version="t")


def _spike(
    run: str, step: int, kind: str = "loss-spike", sev: Severity = Severity.WARNING
) -> Finding:
    return Finding(
        code="SD101",
        kind=kind,
        severity=sev,
        run=run,
        metric=TRAIN_LOSS,
        step_start=step,
        step_end=step,
        message="spike",
    )


RNG = np.random.default_rng(0)
LOSS = 2 + 3 * (1 + np.arange(1000) / 40) ** -0.7 * np.exp(RNG.normal(0, 0.01, 1000))
GRAD = 0.5 * np.exp(RNG.normal(0, 0.1, 1000))


def test_identical_runs_are_not_worse() -> None:
    c = compare_reports(_report("a", LOSS, GRAD), _report("b", LOSS, GRAD))
    assert not c.worse and c.n_common == 1000
    loss = c.checks[0]
    assert loss.values["ratio"] == pytest.approx(1.0) and loss.values["points"] == 100


def test_higher_final_loss_is_worse() -> None:
    worse = LOSS.copy()
    worse[800:] *= 1.10
    c = compare_reports(_report("a", worse, GRAD), _report("b", LOSS, GRAD))
    assert c.worse and c.checks[0].worse
    assert c.checks[0].values["ratio"] == pytest.approx(1.10, rel=1e-6)
    # A looser threshold lets it through.
    assert not compare_reports(
        _report("a", worse, GRAD), _report("b", LOSS, GRAD), Thresholds(max_loss_ratio=1.2)
    ).worse


def test_aligns_by_step_not_by_position() -> None:
    # The baseline starts logging at step 500: only steps 500-999 are common.
    c = compare_reports(_report("a", LOSS, GRAD), _report("b", LOSS[500:], GRAD[500:], start=500))
    assert c.common_steps == (500, 999) and c.n_common == 500
    assert c.checks[0].values["ratio"] == pytest.approx(1.0)


def test_new_kinds_and_more_spikes() -> None:
    cur = _report(
        "a",
        LOSS,
        GRAD,
        findings=(
            _spike("a", 10),
            _spike("a", 20),
            _spike("a", 30, "divergence", Severity.ERROR),
            _spike("a", 40, "restart", Severity.INFO),
        ),
    )
    base = _report("b", LOSS, GRAD, findings=(_spike("b", 10),))
    c = compare_reports(cur, base)
    by = {ch.name: ch for ch in c.checks}
    assert by["new-kinds"].worse and by["new-kinds"].values["new"] == [
        "divergence"
    ]  # restart is info
    assert by["spikes"].worse and by["spikes"].values == {
        "current": 2,
        "baseline": 1,
        "allowed_extra": 0,
    }
    loose = compare_reports(cur, base, Thresholds(max_extra_spikes=1))
    assert {ch.name: ch for ch in loose.checks}["spikes"].worse is False


def test_grad_norm_percentiles() -> None:
    noisy = GRAD.copy()
    noisy[::50] *= 20  # 2 % outliers: p99 up, p50 unchanged
    c = compare_reports(_report("a", LOSS, noisy), _report("b", LOSS, GRAD))
    g = {ch.name: ch for ch in c.checks}["grad-norm"]
    assert (
        g.worse
        and g.values["p99_ratio"] > 2
        and g.values["p50_ratio"] == pytest.approx(1, abs=0.05)
    )


def test_missing_grad_norm_is_not_checked_not_passed() -> None:
    c = compare_reports(_report("a", LOSS), _report("b", LOSS, GRAD))
    g = {ch.name: ch for ch in c.checks}["grad-norm"]
    assert g.worse is None and "not checked" in g.summary


def test_no_common_steps_is_an_error() -> None:
    with pytest.raises(CompareError, match="share no logged steps"):
        compare_reports(_report("a", LOSS[:100]), _report("b", LOSS[:100], start=5000))


def test_nan_losses_are_left_out() -> None:
    cur = LOSS.copy()
    cur[950] = np.nan
    c = compare_reports(_report("a", cur, GRAD), _report("b", LOSS, GRAD))
    assert not c.worse and c.n_common == 999 and any("non-finite" in n for n in c.notes)


def test_renderers() -> None:
    worse = LOSS * 1.2
    c = compare_reports(_report("a", worse, GRAD), _report("b", LOSS, GRAD))
    text = render_comparison_text(c)
    assert "less stable than the baseline" in text and "✘ worse" in text
    doc = json.loads(render_comparison_json(c))
    assert doc["worse"] is True and doc["checks"][0]["name"] == "loss"


def test_several_runs_need_a_name() -> None:
    a, b = _report("a", LOSS), _report("b", LOSS)
    both = Report(
        runs=a.runs + b.runs,
        findings=(),
        skipped=(),
        remedies=(),
        table=MetricsTable.concat([a.table, b.table]),
    )
    with pytest.raises(CompareError, match="exactly one run"):
        compare_reports(both, a)
    assert compare_reports(both, a, run="b").run == "b"


def test_spike_events_count_distinct_steps():
    from stabdiag.compare import spike_events
    from stabdiag.findings import Finding, Severity

    def f(kind, start, **ev):
        return Finding(
            code="X",
            kind=kind,
            severity=Severity.WARNING,
            run="r",
            metric="m",
            step_start=start,
            step_end=start,
            message="",
            evidence=ev,
        )

    both = [
        f("loss-spike", 150, log_interval=1),
        f("grad-spike", 150, spike_steps=[150], log_interval=1),
    ]
    assert spike_events(both) == [150]  # one event, not two findings
    four = [f("grad-spike", 10, spike_steps=[10, 200, 400, 900], log_interval=1)]
    assert len(spike_events(four)) == 4  # four spikes, one finding
