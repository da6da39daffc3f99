"""Resume after every way a run can stop (issue 13: L3, L4, L5, L8 and the train cosmetics)."""

from __future__ import annotations

import json
import pickle
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from stabdiag import table as T
from stabdiag.diagnose import diagnose
from stabdiag.errors import TrainError
from stabdiag.train import checkpoint, loop, resolve, train

SMALL = [
    "n_embd=32",
    "block_size=32",
    "batch_size=8",
    "log_interval=5",
    "eval_interval=1000",
    "data_max_bytes=200000",
    "tensorboard=false",
]


def _cfg(tmp_path, *extra):
    return resolve(
        "tiny", "stable", overrides=[*SMALL, f"out_dir={tmp_path}", "run_name=r", *extra]
    )


def _losses(run_dir) -> pd.Series:
    frame = pd.read_csv(run_dir / "metrics.csv")
    return frame[frame["metric"] == T.TRAIN_LOSS].set_index("step")["value"]


def test_kill_after_a_checkpoint_leaves_no_duplicate_rows(tmp_path):
    """L8: a session killed at step 25 with its checkpoint at 20 logged 20-24 already; the
    resume must not log them twice (analyzing the run dir then showed restart warnings)."""
    cfg = _cfg(tmp_path, "steps=25", "checkpoint_interval=10", "keep_checkpoints=0")
    run = train(cfg).run_dir
    ckpts = run / "checkpoints"
    shutil.copyfile(checkpoint.step_file(ckpts, 20), ckpts / "latest.pt")  # as if killed at 25
    assert list(_losses(run).index) == list(range(25))
    resumed = train(_cfg(tmp_path, "steps=40", "checkpoint_interval=10"), resume=True)
    assert resumed.steps_done == 40
    assert list(_losses(run).index) == list(range(40))  # each step once
    report = diagnose([run])
    assert not [f for f in report.findings if f.kind == "restart"]


def test_config_json_is_replaced_atomically_on_resume(tmp_path, monkeypatch):
    """L3: a resume killed while writing config.json must leave the old one intact."""
    cfg = _cfg(tmp_path, "steps=5")
    run = train(cfg).run_dir
    before = (run / "config.json").read_text()
    real = loop.write_atomic

    def killed_on_config(path, data):
        if path.name == "config.json":
            raise KeyboardInterrupt  # the kill lands inside the write
        return real(path, data)

    monkeypatch.setattr(loop, "write_atomic", killed_on_config)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tmp_path, "steps=10"), resume=True)
    assert (run / "config.json").read_text() == before
    monkeypatch.setattr(loop, "write_atomic", real)
    assert train(_cfg(tmp_path, "steps=10"), resume=True).steps_done == 10


def test_killed_before_the_first_checkpoint(tmp_path):
    """L4: metrics.csv and run.json but no checkpoint: say so; resume starts over; or restart."""
    cfg = _cfg(tmp_path, "steps=8")
    run = train(cfg).run_dir
    shutil.rmtree(run / "checkpoints")  # what a kill -9 before the first save leaves
    with pytest.raises(
        TrainError,
        match=r"stopped before its first checkpoint, so --resume "
        r"starts it over from step 0, --restart discards it",
    ):
        train(cfg)
    resumed = train(cfg, resume=True)
    assert resumed.steps_done == 8 and "starting over from step 0" in resumed.note
    assert list(_losses(run).index) == list(range(8))
    first = _losses(run)
    restarted = train(cfg, restart=True)
    assert restarted.steps_done == 8 and "resumed_at" not in json.loads(
        (run / "run.json").read_text()
    )
    np.testing.assert_allclose(_losses(run).to_numpy(), first.to_numpy(), rtol=0, atol=1e-6)


def test_restart_refuses_a_directory_that_is_not_a_run(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "metrics.csv").write_text("step,loss\n")
    with pytest.raises(TrainError, match="expected a stabdiag run directory"):
        train(_cfg(tmp_path, "steps=3"), restart=True)
    assert (tmp_path / "r" / "metrics.csv").exists()


def test_resume_of_a_finished_run_changes_nothing(tmp_path):
    """L5: it used to rewrite run.json with final_loss NaN."""
    cfg = _cfg(tmp_path, "steps=6")
    done = train(cfg)
    before = (done.run_dir / "run.json").read_bytes()
    again = train(cfg, resume=True)
    assert "already finished at step 6" in again.note and again.steps_done == 6
    assert again.final_loss == pytest.approx(done.final_loss)
    assert (done.run_dir / "run.json").read_bytes() == before


def test_resume_may_change_steps_of_a_recipe_with_derived_warmup(tmp_path):
    """The stable recipe's warm-up is 10% of steps: more steps on resume is allowed (the
    saved warm-up stays), an explicit different warm-up is still refused."""
    cfg = _cfg(tmp_path, "steps=20")
    assert cfg.warmup_steps == 2
    run = train(cfg).run_dir
    longer = resolve(
        "tiny", "stable", overrides=[*SMALL, f"out_dir={tmp_path}", "run_name=r", "steps=40"]
    )
    assert longer.warmup_steps == 4
    assert train(longer, resume=True).steps_done == 40
    assert json.loads((run / "config.json").read_text())["warmup_steps"] == 2
    with pytest.raises(TrainError, match=r"warmup_steps \(2 -> 7\)"):
        train(_cfg(tmp_path, "steps=60", "warmup_steps=7"), resume=True)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def test_crafted_latest_pt_is_one_line_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    torch.save(
        {"step": 1, "x": _Evil()}, ckpts / "latest.pt", pickle_protocol=pickle.HIGHEST_PROTOCOL
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's FutureWarning/UserWarning must not leak
        with pytest.raises(TrainError) as info:
            checkpoint.load(ckpts, torch.device("cpu"))
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(ckpts / "latest.pt"))
    assert "expected a stabdiag checkpoint" in msg
    assert not (tmp_path / "pwned").exists()
    (ckpts / "latest.pt").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(TrainError, match=r"^[^\n]*could not load it \([^\n]*\)$"):
        checkpoint.load(ckpts, torch.device("cpu"))
    torch.save({"step": 3}, ckpts / "latest.pt")
    with pytest.raises(TrainError, match="found a file without model, optimizer"):
        checkpoint.load(ckpts, torch.device("cpu"))


def test_appending_keeps_the_tidy_tables_columns(tmp_path):
    from stabdiag.train.writers import TidyWriter

    ranked = tmp_path / "ranked.csv"
    ranked.write_text("step,metric,value,wall_time,rank\n0,train/loss,5.0,1.000,1\n")
    w = TidyWriter(ranked)  # a single-process branch of a torchrun parent
    w.write(1, {T.TRAIN_LOSS: 4.0}, 2.0)
    w.close()
    assert ranked.read_text().splitlines()[-1] == "1,train/loss,4.0,2.000,0"
    plain = tmp_path / "plain.csv"
    plain.write_text("step,metric,value,wall_time\n0,train/loss,5.0,1.000\n")
    with pytest.raises(TrainError, match="has no rank column"):
        TidyWriter(plain, with_rank=True)
