"""One run, one verdict: the same run written by two loggers is read once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sources_util import write_torch

from stabdiag import sources

LOSS = [(s, float(np.float32(2.0 / (1 + 0.1 * s)))) for s in range(1, 40)]


def _lightning_csv(d: Path, rows, extra: str = "") -> Path:
    d.mkdir(parents=True)
    (d / "hparams.yaml").write_text("lr: 0.1\n")
    lines = ["epoch,step,train_loss" + (",val_loss" if extra else "")]
    lines += [f"0,{s},{v!r}" + ("," if extra else "") for s, v in rows]
    if extra:
        lines.append(f"0,39,,{extra}")
    (d / "metrics.csv").write_text("\n".join(lines) + "\n")
    return d / "metrics.csv"


def test_lightning_tensorboard_and_csv_loggers_are_one_run(tmp_path):
    """Lightning gives the two loggers of one fit different version dirs (TB version_0, CSV
    version_1 under one save_dir); identical values make them one run."""
    root = tmp_path / "lightning_logs"
    write_torch(root / "version_0", {"train_loss": LOSS, "hp_metric": [(0, -1.0)]})
    _lightning_csv(root / "version_1", LOSS, extra="1.25")
    res = sources.load([tmp_path])
    assert [r.name for r in res.runs] == ["version_1"]
    info = res.runs[0]
    assert info.format == "lightning-csv"
    assert any(
        "same run" in w and "version_0" in w and "39 shared values" in w for w in info.warnings
    )
    f = res.table.frame
    assert len(f[f["metric"] == "train/loss"]) == 39  # not doubled
    assert set(f["metric"]) >= {"train/loss", "val/loss", "hp_metric"}  # TB-only series added


def test_hf_tensorboard_mirror_outside_the_output_dir_is_one_run(tmp_path):
    hist = [
        {"loss": round(2.0 / (1 + 0.1 * s), 4), "learning_rate": 1e-4, "step": s}
        for s in range(1, 30)
    ]
    out = tmp_path / "out"
    out.mkdir()
    (out / "trainer_state.json").write_text(json.dumps({"global_step": 29, "log_history": hist}))
    write_torch(
        tmp_path / "tb" / "Dec01_12-00-00_host",
        {
            "train/loss": [(h["step"], h["loss"]) for h in hist],
            "train/learning_rate": [(h["step"], h["learning_rate"]) for h in hist],
        },
    )
    res = sources.load([tmp_path])
    assert len(res.runs) == 1 and res.runs[0].format == "hf-trainer-state"


def test_different_runs_and_copies_stay_apart(tmp_path):
    # different values: two runs, even in sibling loggers
    write_torch(tmp_path / "a" / "tb" / "version_0", {"train_loss": LOSS})
    other = [(s, v * 1.01) for s, v in LOSS]
    _lightning_csv(tmp_path / "a" / "csv" / "version_0", other)
    assert len(sources.load([tmp_path / "a"]).runs) == 2
    # the same format twice (a copied run dir) is not merged: that is the user's own choice
    _lightning_csv(tmp_path / "b" / "x" / "version_0", LOSS)
    _lightning_csv(tmp_path / "b" / "y" / "version_0", LOSS)
    assert len(sources.load([tmp_path / "b"]).runs) == 2
    # too few shared points to tell
    write_torch(tmp_path / "c" / "tb" / "version_0", {"train_loss": LOSS[:3]})
    _lightning_csv(tmp_path / "c" / "csv" / "version_0", LOSS[:3])
    assert len(sources.load([tmp_path / "c"]).runs) == 2


_FIT = """
import torch, lightning as L
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
torch.set_num_threads(1)
torch.manual_seed(0)
class M(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)
    def training_step(self, batch, i):
        x, y = batch
        loss = ((self.lin(x) - y) ** 2).mean()
        self.log("train_loss", loss)
        return loss
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)
ds = torch.utils.data.TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
loggers = [TensorBoardLogger("logs"), CSVLogger("logs")]
L.Trainer(max_epochs=2, logger=loggers, log_every_n_steps=2, enable_progress_bar=False,
          enable_checkpointing=False, enable_model_summary=False, accelerator="cpu").fit(
    M(), torch.utils.data.DataLoader(ds, batch_size=4))
"""


@pytest.mark.slow
def test_real_lightning_two_loggers(tmp_path):
    pytest.importorskip("lightning")
    (tmp_path / "fit.py").write_text(_FIT)
    proc = subprocess.run(
        [sys.executable, "fit.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = sources.load([tmp_path / "logs"])
    assert len(res.runs) == 1, [(r.name, r.format) for r in res.runs]
    assert res.runs[0].format == "lightning-csv"
    assert len(res.table.frame.query("metric == 'train/loss'")) == 16
