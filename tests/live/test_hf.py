"""StabdiagCallback inside a real transformers Trainer: a tiny GPT-2 on CPU, a poisoned batch."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from live_util import BATCH, StepData, tiny_gpt2  # noqa: E402
from transformers import Trainer, TrainingArguments  # noqa: E402

from stabdiag.integrations.hf import FINDINGS_FILE, StabdiagCallback  # noqa: E402

POISON = 60  # 0-based batch index -> Trainer global_step 61 when it is logged


def _train(tmp_path, callback, steps=100, poison=frozenset({POISON})):
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=steps,
        per_device_train_batch_size=BATCH,
        learning_rate=3e-3,
        warmup_steps=0,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
        max_grad_norm=1.0,
    )
    trainer = Trainer(
        model=tiny_gpt2(), args=args, train_dataset=StepData(steps, poison), callbacks=[callback]
    )
    trainer.train()
    return trainer


def test_warn_reports_the_spike_at_its_step_and_trains_on(tmp_path):
    cb = StabdiagCallback()  # warn, level error
    trainer = _train(tmp_path, cb)
    assert trainer.state.global_step == 100  # warn never stops
    spikes = [f for f in cb.monitor.findings if f.kind == "loss-spike"]
    assert [f.step_start for f in spikes] == [POISON + 1]
    lines = [json.loads(x) for x in (tmp_path / FINDINGS_FILE).read_text().splitlines()]
    assert any(x["kind"] == "loss-spike" and x["step_start"] == POISON + 1 for x in lines)


def test_stop_stops_at_the_spike_step(tmp_path):
    cb = StabdiagCallback(action="stop", level="warning")
    trainer = _train(tmp_path, cb)
    assert cb.monitor.stop_finding.kind == "loss-spike"
    assert trainer.state.global_step == POISON + 1


def test_checkpoint_saves_the_step_before_stopping(tmp_path):
    cb = StabdiagCallback(action="checkpoint", level="warning")
    trainer = _train(tmp_path, cb)
    assert trainer.state.global_step == POISON + 1
    ckpt = tmp_path / f"checkpoint-{POISON + 1}"
    assert (ckpt / "trainer_state.json").is_file()
    assert any(ckpt.glob("model.safetensors"))


def test_healthy_run_has_no_spike_and_is_not_stopped(tmp_path):
    cb = StabdiagCallback(action="stop", level="warning")
    trainer = _train(tmp_path, cb, steps=60, poison=frozenset())
    assert trainer.state.global_step == 60
    assert not [f for f in cb.monitor.findings if f.severity.label != "info"]
