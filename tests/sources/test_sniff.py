"""sniff(): format by name and content; checkpoints recognised by name only."""

from __future__ import annotations

from pathlib import Path

import pytest
from sources_util import write_torch

from stabdiag.sources import sniff


@pytest.mark.parametrize(
    "name",
    [
        "pytorch_model.bin",
        "optimizer.pt",
        "model.safetensors",
        "last.ckpt",
        "rng_state_0.pth",
        "state.pkl",
        "model.ckpt-1000.data-00000-of-00001",
        "model.ckpt-1000.index",
        "keras_embedding.ckpt-0",
    ],
)
def test_checkpoints_skipped_by_name(tmp_path, name):
    p = tmp_path / name  # never created: sniff must not need to open it
    assert sniff.is_skipped(p) and sniff.sniff(p) is None


def test_formats_by_name_and_content(tmp_path):
    f = write_torch(tmp_path / "tb", {"loss": [(1, 1.0)]})
    assert sniff.sniff(f) == "tensorboard"
    bare = tmp_path / "catboost" / "events.out.tfevents"  # CatBoost: no suffix at all
    bare.parent.mkdir()
    bare.write_bytes(f.read_bytes())
    assert sniff.sniff(bare) == "tensorboard"
    v = tmp_path / "version_3"
    v.mkdir()
    (v / "metrics.csv").write_text("step,loss\n1,1\n")
    assert sniff.sniff(v / "metrics.csv") == "lightning-csv"
    (tmp_path / "x.csv").write_text("step,loss\n1,1\n")
    assert sniff.sniff(tmp_path / "x.csv") == "csv"
    (tmp_path / "x.jsonl").write_text('{"step": 1}\n')
    assert sniff.sniff(tmp_path / "x.jsonl") == "jsonl"
    (tmp_path / "log.json").write_text('{"step": 1, "loss": 2}\n{"step": 2, "loss": 1}\n')
    assert sniff.sniff(tmp_path / "log.json") == "jsonl"
    (tmp_path / "cfg.json").write_text('{\n  "log_history": [],\n  "global_step": 0\n}\n')
    assert sniff.sniff(tmp_path / "cfg.json") == "hf-trainer-state"
    (tmp_path / "wandb-summary.json").write_text('{"_step": 5, "loss": 1}\n')
    assert sniff.sniff(tmp_path / "wandb-summary.json") is None
    assert sniff.sniff(Path(tmp_path / "notes.txt")) is None


def test_wandb_binary_is_sniffed_by_its_header(tmp_path):
    p = tmp_path / "run-abc.wandb"
    p.write_bytes(b":W&B\x00\x01\x00" + b"\x00" * 10)
    assert sniff.sniff(p) == "wandb-offline"
    q = tmp_path / "other.wandb"
    q.write_bytes(b"\x80\x04not wandb")
    assert sniff.sniff(q) is None
