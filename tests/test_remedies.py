"""Remedies: ranked per run, concrete values from the run, merged across findings."""

from __future__ import annotations

import numpy as np
from common_util import make_run

from stabdiag.findings import Finding, Severity
from stabdiag.remedies import RULES, healthy_clip, suggest


def finding(kind: str, sev: Severity, step: int, run: str = "r", **ev: object) -> Finding:
    return Finding(
        code="SDx",
        kind=kind,
        severity=sev,
        run=run,
        metric="train/loss",
        step_start=step,
        step_end=step,
        message="m",
        evidence=dict(ev),
    )


def test_every_kind_in_design_has_rules() -> None:
    kinds = {
        "loss-spike",
        "grad-spike",
        "grad-explosion",
        "nonfinite",
        "fp16-overflow",
        "divergence",
        "stall",
        "attention-logit-growth",
        "output-logit-drift",
        "restart",
        "lr-schedule",
        "rank-divergence",
        "rl-nonfinite",
        "rl-kl-blowup",
        "rl-entropy-collapse",
        "rl-length-hacking",
        "rl-zero-signal",
        "rl-clip-saturation",
        "rl-logprob-mismatch",
        "rl-value-divergence",
        "rl-preference-overfit",
    }
    assert kinds == set(RULES)
    for rules in RULES.values():
        for r in rules:
            assert r.references, r.id


def test_lr_value_comes_from_lr_in_force_at_onset() -> None:
    steps = np.arange(1000)
    run = make_run(
        train__lr=(steps, np.where(steps < 500, 1e-3, 4e-4)), train__loss=(steps, np.ones(1000))
    )
    rems = suggest([finding("divergence", Severity.ERROR, 600)], {"r": run})
    lower = next(r for r in rems if r.id == "lower-lr")
    assert "2.00e-04" in lower.actions[0] and "4.00e-04" in lower.actions[0]
    # a divergence at step 600 of 1000 is long past any warm-up: no warm-up advice for it
    assert not any(r.id == "warmup" for r in rems)


def test_clip_from_healthy_grad_norm_distribution() -> None:
    rng = np.random.default_rng(0)
    steps = np.arange(2000)
    g = rng.lognormal(0.0, 0.1, 2000)
    g[[100, 900]] = 80.0  # outliers must not set the clip
    run = make_run(train__grad_norm=(steps, g))
    c = healthy_clip(finding("grad-spike", Severity.WARNING, 100), run)
    assert c is not None and 1.1 < c < 1.5
    # evidence wins over recomputation
    assert healthy_clip(finding("grad-spike", Severity.WARNING, 100, healthy_p99=6.2), run) == 6.2


def test_ranked_worst_first_and_deduplicated() -> None:
    run = make_run(train__loss=(np.arange(1000), np.ones(1000)))
    fs = [
        finding("grad-spike", Severity.WARNING, 5),
        finding("loss-spike", Severity.ERROR, 8),
        finding("grad-spike", Severity.WARNING, 9),
    ]
    fs[1] = finding("loss-spike", Severity.ERROR, 800)
    rems = suggest(fs, {"r": run})
    assert [r.rank for r in rems] == list(range(1, len(rems) + 1))
    assert rems[0].id == "rewind"  # from the error finding
    ids = [r.id for r in rems]
    assert len(ids) == len(set(ids))
    clip = next(r for r in rems if r.id == "clip")
    assert set(clip.addresses) == {"loss-spike@800", "grad-spike@5", "grad-spike@9"}


def test_benign_fp16_scale_search_gets_no_fix() -> None:
    rems = suggest([finding("fp16-overflow", Severity.INFO, 3)], {})
    assert [r.id for r in rems] == ["scaler-ok"]
    rems = suggest([finding("fp16-overflow", Severity.ERROR, 600)], {})
    assert rems[0].id == "bf16"


def test_remedies_are_per_run() -> None:
    fs = [
        finding("loss-spike", Severity.ERROR, 8, run="a"),
        finding("restart", Severity.INFO, 3, run="b"),
    ]
    rems = suggest(fs, {})
    assert {r.run for r in rems} == {"a", "b"}
    assert [r.rank for r in rems if r.run == "b"] == [1]


def test_info_severity_is_truthy() -> None:
    assert Severity.INFO and Severity.INFO < Severity.WARNING


def test_transient_spike_is_not_answered_with_a_rewind() -> None:
    fs = [finding("loss-spike", Severity.WARNING, 150, recovered=True, recovery_steps=1)]
    ids = [r.id for r in suggest(fs, {})]
    assert "rewind" not in ids and ids[0] == "skip-spike-updates"
    fs = [finding("loss-spike", Severity.ERROR, 150, recovered=False)]
    assert suggest(fs, {})[0].id == "rewind"


def test_overfitting_gets_early_stopping_not_divergence_fixes() -> None:
    f = finding(
        "divergence", Severity.INFO, 1000, overfitting=True, best_val_step=1000, best_val_loss=0.321
    )
    (r,) = suggest([f], {})
    assert r.id == "overfitting" and "step 1000" in r.actions[0] and "0.321" in r.actions[0]
