"""Two CPU processes under torchrun (gloo): one metrics.csv with a rank column, TB from rank 0."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from stabdiag import table as T

pytestmark = pytest.mark.slow

SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from stabdiag.train import resolve, train
overrides = sys.argv[1:]
train(resolve("tiny", "stable", overrides=overrides))
"""


def test_two_ranks_on_cpu(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(SCRIPT))
    overrides = [f"out_dir={tmp_path}", "run_name=ddp", "n_embd=32", "block_size=32",
                 "batch_size=4", "steps=10", "eval_interval=10", "log_interval=5",
                 "data_max_bytes=200000", "device=cpu"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(script), *overrides]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    frame = pd.read_csv(tmp_path / "ddp" / "metrics.csv")
    assert list(frame.columns) == ["step", "metric", "value", "wall_time", "rank"]
    loss = frame[frame["metric"] == T.TRAIN_LOSS]
    assert sorted(loss["rank"].unique()) == [0, 1]
    assert (loss.groupby("rank")["step"].apply(sorted) == [list(range(10))] * 2).all()
    by_rank = loss.pivot(index="step", columns="rank", values="value")
    assert (by_rank[0] != by_rank[1]).any()  # each rank draws its own batches
    assert set(frame[frame["metric"] == T.VAL_LOSS]["rank"]) == {0, 1}
    assert len(list((tmp_path / "ddp").glob("events.out.tfevents.*"))) == 1
