"""Every stabilizer knob builds and trains a few finite steps (a smoke test, not a quality test)."""

from __future__ import annotations

import math
import os
import signal

import pytest

from stabdiag.train import resolve, train
from stabdiag.train.config import TrainConfig
from stabdiag.train.loop import lr_at, seq_len_at


@pytest.mark.parametrize(
    "knobs",
    [
        ["norm=rmsnorm", "qk_norm=true", "z_loss=1e-4"],
        ["norm_placement=post", "output_norms=true", "softmax_cap=30"],
        ["norm_placement=none", "scaled_embed=true", "tie_embeddings=false", "bias=true"],
        ["seq_warmup_steps=4", "precision=bf16", "data=synthetic", "decay=linear", "grad_clip=0"],
    ],
)
def test_knobs_train_finite(tiny_overrides, knobs):
    result = train(resolve("tiny", "stable", overrides=[*tiny_overrides, "steps=6", *knobs]))
    assert result.steps_done == 6 and math.isfinite(result.final_loss)


def test_schedules():
    cfg = TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=10, steps=110, decay="cosine")
    assert lr_at(cfg, 0) == pytest.approx(0.1) and lr_at(cfg, 9) == pytest.approx(1.0)
    assert lr_at(cfg, 60) == pytest.approx(0.55) and lr_at(cfg, 110) == pytest.approx(0.1)
    warm = TrainConfig(block_size=64, seq_warmup_steps=10)
    assert [seq_len_at(warm, s) for s in (0, 5, 10)] == [8, 32, 64]


def test_sigint_stops_cleanly_with_a_checkpoint(tiny_overrides):
    def ctrl_c(steps_done, metrics):
        if steps_done == 10:
            os.kill(os.getpid(), signal.SIGINT)

    result = train(resolve("tiny", "stable", overrides=tiny_overrides), progress=ctrl_c)
    assert result.interrupted and result.steps_done == 10
    assert (result.run_dir / "checkpoints" / "latest.pt").exists()
