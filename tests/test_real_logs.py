"""Acceptance on real public logs (../shared/real_logs): skipped cleanly when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from stabdiag.diagnose import diagnose
from stabdiag.findings import Severity

CLEAN = ["tb_hf_trainer_hslu", "lightning_csv_slm", "hf_trainer_state_trl_sft"]
INGEST = [
    "tb_hf_trainer_hslu",
    "tb_torch_duplicate_steps",
    "tb_keras_tf2_tensor",
    "tb_keras_tf25_simple_value",
    "hf_trainer_state_star_gradspikes",
    "hf_trainer_state_trl_sft",
    "hf_trainer_state_whisper_fp16",
    "lightning_csv_slm",
    "wandb_export_csv",
]


@pytest.mark.parametrize("folder", CLEAN)
def test_clean_real_runs_have_no_errors(real_logs: Path, folder: str) -> None:
    report = diagnose([real_logs / folder])
    assert report.runs and not report.errors
    errors = report.at_or_above(Severity.ERROR)
    assert not errors, [f.message for f in errors]


@pytest.mark.parametrize("folder", INGEST)
def test_real_folders_ingest_without_error(real_logs: Path, folder: str) -> None:
    report = diagnose([real_logs / folder])
    assert report.runs, folder
    assert not report.errors, report.errors
    if folder != "tb_torch_duplicate_steps":  # synthetic tags foo/bar: no loss to judge
        assert report.judged_runs(), f"{folder}: no run could be judged"


def test_star_gradspikes_gives_grad_spike(real_logs: Path) -> None:
    report = diagnose([real_logs / "hf_trainer_state_star_gradspikes"])
    kinds = {f.kind for f in report.findings}
    assert "grad-spike" in kinds
    assert not report.at_or_above(Severity.ERROR)


def test_duplicate_steps_gives_restart(real_logs: Path) -> None:
    report = diagnose([real_logs / "tb_torch_duplicate_steps"])
    restarts = [f for f in report.findings if f.kind == "restart"]
    assert restarts and restarts[0].step_start == 90


def test_whisper_overfit_is_not_an_error(real_logs: Path) -> None:
    report = diagnose([real_logs / "hf_trainer_state_whisper_fp16"])
    assert not report.at_or_above(Severity.ERROR)
