"""Issue 3's acceptance at the analyze level: train `tiny`, then `diagnose` the run directory.

Short runs of the `tiny` model on one CPU thread (the whole file is ~20 s of CPU): the detectors
see exactly what `stabdiag train` writes (TensorBoard events + metrics.csv), read back as one run.
"""

from __future__ import annotations

import json

import pytest

from stabdiag.diagnose import diagnose
from stabdiag.findings import Severity
from stabdiag.train import resolve, train

pytestmark = pytest.mark.slow  # ~20 s of CPU in all


def _train_and_diagnose(tmp_path, recipe: str, *overrides: str):
    cfg = resolve("tiny", recipe, overrides=[f"out_dir={tmp_path}", "eval_batches=2", *overrides])
    result = train(cfg)
    report = diagnose([result.run_dir])
    assert len(report.runs) == 1 and not report.errors  # TB events + metrics.csv: one run
    return result, report


def _describe(findings) -> str:
    return "; ".join(
        f"{f.kind}/{f.severity.name.lower()}@{f.step_start}-{f.step_end}: {f.message}"
        for f in findings
    )


def test_bad_batch_is_reported_as_a_loss_spike_covering_its_step(tmp_path):
    bad_step = 70
    result, report = _train_and_diagnose(
        tmp_path, "stable", "steps=100", "eval_interval=50", f"inject=bad_batch@{bad_step}"
    )
    injected = json.loads((result.run_dir / "run.json").read_text())["injected"]
    assert [(e["kind"], e["step"]) for e in injected] == [("bad_batch", bad_step)]
    spikes = [f for f in report.findings if f.kind == "loss-spike"]
    assert any(f.step_start <= bad_step <= f.step_end for f in spikes), _describe(report.findings)
    # The run recovers: a single bad batch is not an error-level problem.
    assert max((f.severity for f in report.findings), default=Severity.INFO) < Severity.ERROR, (
        _describe(report.findings)
    )


def test_unstable_recipe_gives_error_findings(tmp_path):
    # post-LN, LR 0.3 without warm-up or clipping, fp16: the loss turns NaN from about step 30
    # and the loss scale falls (fp16 on CPU is slow: 40 steps are ~10 s).
    result, report = _train_and_diagnose(tmp_path, "unstable", "steps=40", "eval_interval=20")
    errors = {f.kind for f in report.findings if f.severity == Severity.ERROR}
    assert errors, _describe(report.findings)
    assert "nonfinite" in errors, _describe(report.findings)
    kinds = {f.kind for f in report.findings}
    assert {"fp16-overflow", "lr-schedule"} <= kinds, _describe(report.findings)


def test_stable_recipe_gives_no_error(tmp_path):
    _, report = _train_and_diagnose(tmp_path, "stable", "steps=100", "eval_interval=50")
    errors = [f for f in report.findings if f.severity >= Severity.ERROR]
    assert not errors, _describe(errors)
