"""End-to-end runs of the instrumented loop on CPU (each a few seconds)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from stabdiag import table as T
from stabdiag.train import resolve, train


def _frame(run_dir):
    return pd.read_csv(run_dir / "metrics.csv")


def _series(frame, metric):
    s = frame[frame["metric"] == metric].drop_duplicates("step", keep="last")
    return s.set_index("step")["value"]


def test_tiny_run_writes_everything_tensorboard_can_read(tiny_overrides):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = resolve("tiny", "stable", overrides=[*tiny_overrides, "run_name=basic"])
    result = train(cfg)
    run = result.run_dir
    assert result.steps_done == 40 and not result.interrupted and result.stop_reason == "completed"
    assert np.isfinite(result.final_loss) and np.isfinite(result.final_val_loss)
    names = {p.name for p in run.iterdir()}
    assert {"metrics.csv", "config.json", "run.json", "checkpoints"} <= names
    assert any(n.startswith("events.out.tfevents.") for n in names)
    assert (run / "checkpoints" / "latest.pt").exists()
    assert json.loads((run / "config.json").read_text())["lr"] == cfg.lr

    frame = _frame(run)
    assert list(frame.columns) == ["step", "metric", "value", "wall_time"]
    written = set(frame["metric"])
    claimed = {
        T.TRAIN_LOSS,
        T.VAL_LOSS,
        T.GRAD_NORM,
        T.LR,
        T.UPDATE_RATIO,
        T.PARAM_NORM,
        T.MAX_ATTN_LOGIT,
        T.OUTPUT_LOGZ,
        T.TOKENS_PER_S,
        *(T.GRAD_NORM_PREFIX + g for g in ("embed", "block0", "block1")),
        *(T.ACT_RMS_PREFIX + b for b in ("block0", "block1")),
    }
    assert claimed <= written
    assert all(T.is_canonical(m) or m.startswith(T.MAX_ATTN_LOGIT + "/") for m in written)
    assert sorted(_series(frame, T.TRAIN_LOSS).index) == list(range(40))  # every step
    assert list(_series(frame, T.VAL_LOSS).index) == [19, 39]

    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == written
    tb_loss = [e.value for e in acc.Scalars(T.TRAIN_LOSS)]
    np.testing.assert_allclose(tb_loss, _series(frame, T.TRAIN_LOSS).to_numpy(), rtol=1e-6)


def test_fp16_on_cpu_records_loss_scale_and_skipped_steps(tiny_overrides):
    overrides = [*tiny_overrides, "steps=12", "precision=fp16", "inject=grad_scale@6:factor=1e8"]
    result = train(resolve("tiny", "stable", overrides=overrides))
    frame = _frame(result.run_dir)
    scale, skipped = _series(frame, T.LOSS_SCALE), _series(frame, T.SKIPPED_STEP)
    assert len(scale) == len(skipped) == 12
    assert skipped[6] == 1.0 and skipped.drop(6).eq(0).all()
    assert scale[7] == scale[6] / 2  # the scaler backed off after the overflow
    assert _series(frame, T.UPDATE_RATIO)[6] == 0.0  # the step really was skipped


def test_injections_are_recorded_and_a_bad_batch_spikes_the_loss(tiny_overrides):
    overrides = [*tiny_overrides, "inject=bad_batch@30", "inject=lr_spike@10:factor=5,steps=3"]
    result = train(resolve("tiny", "stable", overrides=overrides))
    meta = json.loads((result.run_dir / "run.json").read_text())
    kinds = {(e["kind"], e["step"], e["last_step"]) for e in meta["injected"]}
    assert kinds == {("bad_batch", 30, 30), ("lr_spike", 10, 12)}
    assert meta["torch_version"] and meta["stabdiag_version"] and meta["precision"] == "fp32"
    loss = _series(_frame(result.run_dir), T.TRAIN_LOSS)
    neighbours = loss[list(range(25, 30)) + list(range(31, 36))]
    assert loss[30] > neighbours.max() + 1.0  # uniform random bytes: ~ln(256) = 5.5 nats
    lr = _series(_frame(result.run_dir), T.LR)
    assert lr[11] == pytest.approx(5 * cfg_lr_without_spike(result.run_dir, 11))


def cfg_lr_without_spike(run_dir, step):
    from stabdiag.train.config import TrainConfig
    from stabdiag.train.loop import lr_at

    saved = json.loads((run_dir / "config.json").read_text())
    saved["inject"] = tuple(saved["inject"])
    return lr_at(TrainConfig(**saved), step)


def test_interrupt_then_resume_reproduces_the_uninterrupted_losses(tiny_overrides):
    base = [*tiny_overrides, "steps=30", "dropout=0.1"]
    full = train(resolve("tiny", "stable", overrides=[*base, "run_name=full"]))

    def stop_at_15(steps_done, metrics):
        if steps_done >= 15:
            raise KeyboardInterrupt  # what Ctrl-C inside the CLI's progress bar looks like

    cfg = resolve("tiny", "stable", overrides=[*base, "run_name=cut"])
    cut = train(cfg, progress=stop_at_15)
    assert cut.interrupted and cut.steps_done == 15
    resumed = train(cfg, resume=True)
    assert resumed.steps_done == 30 and not resumed.interrupted

    want = _series(_frame(full.run_dir), T.TRAIN_LOSS)
    got = _series(_frame(resumed.run_dir), T.TRAIN_LOSS)
    assert list(got.index) == list(range(30))
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=0, atol=1e-6)
    meta = json.loads((resumed.run_dir / "run.json").read_text())
    assert meta["resumed_at"] == [15]


def test_resume_refuses_a_different_model(tiny_overrides):
    from stabdiag.errors import TrainError

    cfg = resolve("tiny", "stable", overrides=[*tiny_overrides, "steps=5", "run_name=r"])
    train(cfg)
    changed = resolve(
        "tiny", "stable", overrides=[*tiny_overrides, "steps=10", "run_name=r", "n_layer=3"]
    )
    with pytest.raises(TrainError, match="n_layer"):
        train(changed, resume=True)
