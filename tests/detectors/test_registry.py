import json
import math

import numpy as np
import pytest
from detectors_util import decaying, make_run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

import stabdiag.detectors as det
from stabdiag.findings import Severity, Skipped

KINDS = {
    "nonfinite": "SD001",
    "loss-spike": "SD101",
    "divergence": "SD102",
    "stall": "SD103",
    "grad-spike": "SD201",
    "grad-explosion": "SD202",
    "fp16-overflow": "SD301",
    "attention-logit-growth": "SD401",
    "output-logit-drift": "SD402",
    "lr-schedule": "SD501",
    "restart": "SD601",
    "rank-divergence": "SD602",
    # RL fine-tuning (issue 20)
    "rl-nonfinite": "SD002",
    "rl-kl-blowup": "SD701",
    "rl-entropy-collapse": "SD702",
    "rl-length-hacking": "SD703",
    "rl-zero-signal": "SD704",
    "rl-clip-saturation": "SD705",
    "rl-logprob-mismatch": "SD706",
    "rl-value-divergence": "SD707",
    "rl-preference-overfit": "SD708",
}
SECTIONS = (
    "What it detects",
    "Why it matters",
    "How it is computed",
    "Known false positives",
    "References",
)


def test_registry_codes_kinds_and_docs():
    assert {d.kind: d.code for d in det.DETECTORS} == KINDS
    for d in det.DETECTORS:
        assert all(s in d.doc for s in SECTIONS), d.kind
        assert det.by_kind(d.kind) is d and det.by_kind(d.code.lower()) is d


def test_by_kind_unknown_raises():
    with pytest.raises(KeyError, match="unknown detector"):
        det.by_kind("nope")


def test_select_ignore_and_sorting():
    x = decaying(300)
    x[200] *= 5
    x[100] *= 5
    runs = [make_run("b", loss=x), make_run("a", loss=x)]
    findings, skipped = det.run_detectors(runs, select=["loss-spike", "SD001"])
    assert [(f.run, f.step_start) for f in findings] == [
        ("b", 100),
        ("b", 200),
        ("a", 100),
        ("a", 200),
    ]
    assert skipped == []
    findings, skipped = det.run_detectors(runs, ignore=["SD101"])
    assert all(f.kind != "loss-spike" for f in findings)
    assert {s.kind for s in skipped} >= {
        "grad-spike",
        "fp16-overflow",
        "rank-divergence",
        "lr-schedule",
    }


def test_loss_only_run_gets_every_loss_check():
    findings, skipped = det.run_detectors([make_run(loss=decaying(500))])
    assert findings == []
    judged = set(KINDS) - {s.kind for s in skipped}
    assert judged >= {"nonfinite", "loss-spike", "divergence", "stall", "restart"}
    assert all(s.reason for s in skipped)


def test_evidence_is_plain_json_without_nan():
    x = decaying(400)
    x[100] *= 6
    x[300:] = np.nan
    g = np.ones(400)
    g[200] = 50.0
    findings, _ = det.run_detectors([make_run(loss=x, grad_norm=g, lr=np.full(400, 3e-3))])
    assert {f.kind for f in findings} >= {"loss-spike", "nonfinite", "grad-spike"}
    for f in findings:
        text = json.dumps(f.to_dict(), allow_nan=False)
        assert "NaN" not in text
        assert f.message.endswith(".")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=hs.integers(50, 3000),
    a=hs.floats(0.5, 20),
    b=hs.floats(0.1, 1.0),
    c=hs.floats(0.01, 5),
    noise=hs.floats(0.0, 0.05),
    seed=hs.integers(0, 2**31),
    every=hs.sampled_from([1, 10, 100]),
)
def test_healthy_decaying_curves_never_error(n, a, b, c, noise, seed, every):
    rng = np.random.default_rng(seed)
    t = np.arange(1, n + 1) * every
    loss = (a * t**-b + c) * (1 + noise * rng.standard_normal(n))
    g = (0.5 + 2 * t**-0.5) * np.exp(0.1 * rng.standard_normal(n))
    lr = np.minimum(1.0, t / (0.05 * t[-1])) * 3e-4
    findings, _ = det.run_detectors([make_run(loss=loss, grad_norm=g, lr=lr, steps=t)])
    assert not [f for f in findings if f.severity >= Severity.WARNING], [
        f.message for f in findings
    ]


def test_nonfinite_only_run_is_judged_not_crashing():
    findings, skipped = det.run_detectors(
        [make_run(loss=[math.nan] * 30, grad_norm=[math.inf] * 30)]
    )
    assert any(f.kind == "nonfinite" and f.severity == Severity.ERROR for f in findings)
    assert all(isinstance(s, Skipped) for s in skipped)


def test_empty_run_skips_everything_but_restart():
    findings, skipped = det.run_detectors([make_run()])
    rl = {
        k for k in KINDS if k.startswith("rl-")
    }  # RL checks do not apply to a run without rl/ series
    assert findings == [] and {s.kind for s in skipped} == set(KINDS) - {"restart"} - rl
