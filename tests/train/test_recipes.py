"""The `tiny` recipes do what the docs promise: `unstable` goes wrong, `stable` does not."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from stabdiag import table as T
from stabdiag.train import resolve, train

pytestmark = pytest.mark.slow


def _wide(run_dir):
    frame = pd.read_csv(run_dir / "metrics.csv")
    return frame.pivot_table(index="step", columns="metric", values="value", dropna=False)


def test_tiny_stable_trains_smoothly(tmp_path):
    result = train(resolve("tiny", "stable", overrides=[f"out_dir={tmp_path}"]))
    wide = _wide(result.run_dir)
    assert result.stop_reason == "completed" and result.steps_done == 300
    assert result.final_val_loss < 2.9  # from ln(256) = 5.5 at init
    assert wide[T.TRAIN_LOSS].notna().all() and (wide[T.TRAIN_LOSS] < 6).all()
    assert wide[T.MAX_ATTN_LOGIT].max() < 50


def test_tiny_unstable_overflows_and_goes_nonfinite(tmp_path):
    result = train(resolve("tiny", "unstable", overrides=[f"out_dir={tmp_path}"]))
    wide = _wide(result.run_dir)
    assert result.stop_reason == "nonfinite" and math.isnan(result.final_loss)
    assert wide[T.SKIPPED_STEP].sum() >= 10
    assert wide[T.LOSS_SCALE].iloc[-1] < 1.0  # the scaler collapsed
