"""Every TensorBoard / HF / Lightning / CSV sample in ../shared/real_logs loads cleanly."""

from __future__ import annotations

import pytest

from stabdiag import sources

CASES = {
    "tb_hf_trainer_hslu": ("tensorboard", "train/loss"),
    "tb_torch_duplicate_steps": ("tensorboard", None),
    "tb_keras_tf2_tensor": ("tensorboard", "val/loss"),
    "tb_keras_tf25_simple_value": ("tensorboard", "train/loss"),
    "hf_trainer_state_star_gradspikes": ("hf-trainer-state", "train/loss"),
    "hf_trainer_state_trl_sft": ("hf-trainer-state", "train/loss"),
    "hf_trainer_state_whisper_fp16": ("hf-trainer-state", "train/loss"),
    "lightning_csv_slm": ("lightning-csv", "train/loss"),
    "wandb_export_csv": ("wandb-csv", "train/loss"),
}


@pytest.mark.parametrize("folder", sorted(CASES))
def test_real_log_loads(real_logs, folder):
    fmt, metric = CASES[folder]
    res = sources.load([real_logs / folder])
    assert res.errors == ()
    assert len(res.runs) == 1 and res.runs[0].format == fmt
    name = res.runs[0].name
    if metric is not None:
        assert len(res.table.series(name, metric)) > 5


def test_duplicate_steps_restart(real_logs):
    res = sources.load([real_logs / "tb_torch_duplicate_steps"])
    (run,) = res.runs
    s = res.table.series(run.name, "meta/restart")
    assert s.steps.tolist() == [90] and s.values.tolist() == [99.0]
    assert sum("restart" in w for w in run.warnings) == 1
    foo = res.table.series(run.name, "dup_steps/foo")
    assert foo.steps.tolist() == list(range(200))  # later-written 90..99 replace the first ones


def test_keras_tf2_train_and_validation(real_logs):
    res = sources.load([real_logs / "tb_keras_tf2_tensor"])
    (run,) = res.runs
    assert len(res.table.series(run.name, "train/loss")) == 10
    assert len(res.table.series(run.name, "val/loss")) == 10


def test_lightning_step_loss(real_logs):
    res = sources.load([real_logs / "lightning_csv_slm"])
    (run,) = res.runs
    assert ("train_loss_step", "train/loss") in {m[:2] for m in run.mapping}
    assert dict(m[:2] for m in run.mapping)["train_loss_epoch"] == "train_loss_epoch"
    assert run.meta["hparams"]["d_model"] == 768


def test_hf_tb_summary_is_not_loss(real_logs):
    res = sources.load([real_logs / "tb_hf_trainer_hslu"])
    (run,) = res.runs
    assert dict(m[:2] for m in run.mapping)["train/train_loss"] == "train/train_loss"
    assert len(res.table.series(run.name, "train/loss")) == 4455


def test_whole_real_logs_tree(real_logs):
    res = sources.load([real_logs])
    names = [r.name for r in res.runs]
    assert len(names) == len(set(names)) >= len(CASES)
