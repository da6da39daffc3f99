"""The causes one finding names by itself (a faulty rank, overfitting, an LR jump, output-logit
drift): what each says, what it accounts for, and when a more specific reading takes over."""

from __future__ import annotations

import numpy as np
from common_util import finding

from stabdiag import runconfig as rc
from stabdiag.diagnosis import diagnose_run
from stabdiag.findings import Severity
from stabdiag.table import RunData, Series

STEPS = np.arange(300)
RUN = RunData("r", {"train/loss": Series(STEPS, np.ones(300))})


def test_a_rank_divergence_is_a_faulty_rank_whatever_else_the_run_shows() -> None:
    fs = [
        finding("loss-spike", Severity.ERROR, 80, recovered=False),
        finding("rank-divergence", Severity.WARNING, 120),
        finding("rank-divergence", Severity.WARNING, 200),
    ]
    d = diagnose_run(fs, RUN)
    assert d.cause == "faulty-rank" and d.confidence == "medium"
    assert d.statement.startswith("One replica departs from the others from step 120: ")
    assert d.evidence == ("rank-divergence at 120",) and d.explained == ("rank-divergence@120",)
    assert d.changes == ("hardware",)


def test_overfitting_only_when_nothing_else_is_wrong() -> None:
    of = finding("divergence", Severity.WARNING, 900, overfitting=True, best_val_step=700)
    d = diagnose_run([of], RUN)
    assert d.cause == "overfitting" and d.confidence == "high"
    assert d.statement.startswith("The validation loss turned up from step 700 while the training")
    assert d.explained == ("divergence@900",) and d.changes == ("checkpoint", "regularise")
    spike = finding("loss-spike", Severity.WARNING, 50, recovered=True)
    assert diagnose_run([of, spike], RUN).cause != "overfitting"


def test_an_lr_jump_that_trouble_followed_accounts_for_the_trouble_after_it() -> None:
    jump = finding(
        "lr-schedule",
        Severity.WARNING,
        199,
        issue="lr_jump",
        factor=10.0,
        step=200,
        trouble="loss-spike",
        trouble_step=201,
    )
    before = finding("grad-spike", Severity.WARNING, 150)
    after = finding("loss-spike", Severity.WARNING, 201, recovered=True)
    d = diagnose_run([jump, before, after], RUN)
    assert d.cause == "lr-jump" and d.confidence == "medium"
    assert d.statement.startswith(
        "The LR jumped 10.0x at step 200 and loss-spike followed at step 201: a scheduler fault"
    )
    assert d.explained == ("loss-spike@201",) and d.changes == ("schedule", "recovery", "clip")
    quiet = finding("lr-schedule", Severity.WARNING, 199, issue="lr_jump", factor=10.0, step=200)
    assert diagnose_run([quiet, before, after], RUN).cause != "lr-jump"


def test_output_logit_drift_unless_the_run_already_has_a_z_loss() -> None:
    drift = finding("output-logit-drift", Severity.WARNING, 140)
    d = diagnose_run([drift], RUN)
    assert d.cause == "output-logit-drift" and d.changes == ("z-loss", "lr")
    assert d.statement.startswith("The output softmax normaliser drifts from step 140: ")
    assert d.explained == ("output-logit-drift@140",)
    info = finding("output-logit-drift", Severity.INFO, 140)  # not trouble: no cause from it
    assert diagnose_run([info], RUN).cause == "healthy"
    cfg = rc.build([("config.json", {"z_loss": 1e-4})], framework="", framework_source="test")
    with_z = RunData("r", RUN.series, meta={"run_config": cfg})
    assert diagnose_run([drift], with_z).cause != "output-logit-drift"
