"""Known answers on real public logs (skipped when ../shared/real_logs is absent)."""

from detectors_util import load_llmc, load_trainer_state, load_wandb_csv

import stabdiag.detectors as det
from stabdiag.findings import Severity


def _run(run):
    findings, _ = det.run_detectors([run])
    return findings


def test_star_gradspikes_gives_grad_spike_and_no_error():
    findings = _run(load_trainer_state("hf_trainer_state_star_gradspikes"))
    gs = [f for f in findings if f.kind == "grad-spike"]
    assert len(gs) == 1 and gs[0].severity == Severity.WARNING
    assert {22360, 33900, 4700, 10600} <= set(gs[0].evidence["spike_steps"])
    assert gs[0].evidence["loss_responded"] is False
    assert not [f for f in findings if f.severity == Severity.ERROR]
    assert not [f for f in findings if f.kind in ("loss-spike", "divergence", "stall")]


def test_trl_sft_is_clean():
    findings = _run(load_trainer_state("hf_trainer_state_trl_sft"))
    assert not [f for f in findings if f.severity >= Severity.WARNING], [
        f.message for f in findings
    ]


def test_whisper_fp16_overfits_without_error():
    findings = _run(load_trainer_state("hf_trainer_state_whisper_fp16"))
    assert not [f for f in findings if f.severity >= Severity.WARNING], [
        f.message for f in findings
    ]
    (ov,) = [f for f in findings if f.kind == "divergence"]
    assert ov.severity == Severity.INFO and ov.evidence["overfitting"] is True


def test_llmc_main_log_grad_spikes_without_loss_trouble():
    findings = _run(load_llmc("main.log"))
    gs = [f for f in findings if f.kind == "grad-spike"]
    assert len(gs) == 1 and {4233, 7435, 9025, 9954} <= set(gs[0].evidence["spike_steps"])
    assert not [f for f in findings if f.severity == Severity.ERROR]


def test_noisy_diffusion_loss_is_not_flagged():
    findings = _run(load_wandb_csv())
    assert not [f for f in findings if f.severity >= Severity.WARNING], [
        f.message for f in findings
    ]
