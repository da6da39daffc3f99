"""`stabdiag train --guard`: the live Monitor inside the trainer's loop, on an injected bad batch.

Each run is the tiny model for 50 steps on one thread (~5 s of CPU). The bad batch is one byte
(NUL, never in the stdlib corpus) repeated: with the coinciding grad-norm spike it is a warning,
the guard's default level."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from stabdiag import table as T
from stabdiag.cli import app
from stabdiag.errors import TrainError
from stabdiag.train import checkpoint, resolve, train
from stabdiag.train.loop import GUARD_SKIPPED

BAD = 35
BAD_BATCH = f"bad_batch@{BAD}:mode=repeat,byte=0"


@pytest.fixture
def overrides(tmp_path):
    return [
        f"out_dir={tmp_path}",
        "threads=1",
        "n_embd=32",
        "block_size=32",
        "batch_size=8",
        "steps=50",
        "eval_interval=25",
        "log_interval=5",
        "data_max_bytes=200000",
        "warmup_steps=5",
        "tensorboard=false",
        f"inject={BAD_BATCH}",
    ]


def _series(run_dir, metric):
    frame = pd.read_csv(run_dir / "metrics.csv")
    s = frame[frame["metric"] == metric].drop_duplicates("step", keep="last")
    return s.set_index("step")["value"]


def _meta(run_dir):
    return json.loads((run_dir / "run.json").read_text())


def test_guard_key_is_a_config_key_with_choices(tmp_path):
    assert resolve("tiny", "stable").guard == "off"
    assert resolve("tiny", "stable", overrides=["guard=stop"]).guard == "stop"
    toml = tmp_path / "run.toml"
    toml.write_text('[train]\nguard = "skip"\nguard_level = "error"\n')
    cfg = resolve("tiny", "stable", config_file=toml)
    assert (cfg.guard, cfg.guard_level) == ("skip", "error")
    with pytest.raises(TrainError, match="guard must be one of off, warn, stop, skip"):
        resolve("tiny", "stable", overrides=["guard=halt"])
    r = CliRunner().invoke(app, ["train", "--guard", "warn", "--show-config"])
    assert r.exit_code == 0 and json.loads(r.stdout)["guard"] == "warn"
    r = CliRunner().invoke(app, ["train", "--guard", "halt", "--show-config"])
    assert r.exit_code == 2 and "guard must be one of" in r.output


def test_stop_checkpoints_and_ends_the_run_naming_the_finding(overrides, tmp_path):
    r = CliRunner().invoke(
        app, ["train", *(a for kv in overrides for a in ("--set", kv)), "--guard", "stop",
              "--name", "stop", "--no-analyze"]
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    run_dir = tmp_path / "stop"
    meta = _meta(run_dir)
    # the spike's step arrives on the host at the next log interval (every 5 steps): stop there
    assert meta["stop_reason"] == "guard"
    assert BAD < meta["steps_done"] <= BAD + 5
    by = meta["guard"]["stopped_by"]
    assert (by["kind"], by["step_start"], by["severity"]) == ("loss-spike", BAD, "warning")
    assert meta["guard"]["stopped_at_step"] == meta["steps_done"]
    assert meta["guard"]["findings"][0]["kind"] == "loss-spike"
    ckpt = checkpoint.step_file(run_dir / "checkpoints", meta["steps_done"])
    assert ckpt.exists()
    assert _series(run_dir, T.TRAIN_LOSS).index.max() == meta["steps_done"] - 1
    # the CLI printed the finding once and why it stopped
    assert r.output.count(f"guard: warning loss-spike at step {BAD}") == 1
    assert "stopped by the guard (loss-spike" in r.output


def test_skip_skips_the_optimizer_step_of_the_bad_batch(overrides, tmp_path):
    res = train(resolve("tiny", "stable", overrides=[*overrides, "guard=skip", "run_name=skip"]))
    assert res.stop_reason == "completed" and res.steps_done == 50
    assert res.guard["skipped_steps"] == [BAD]
    assert _meta(res.run_dir)["guard"]["skipped_steps"] == [BAD]
    skipped = _series(res.run_dir, GUARD_SKIPPED)
    assert list(skipped[skipped > 0].index) == [BAD] and len(skipped) == 50
    ratio = _series(res.run_dir, T.UPDATE_RATIO)
    assert ratio[BAD] == 0.0 and (ratio.drop(BAD) > 0).all()  # no update at S, one every else
    # the fp16 scaler's skip series is untouched: analysis must not read this as overflow
    assert T.SKIPPED_STEP not in set(pd.read_csv(res.run_dir / "metrics.csv")["metric"])
    loss = _series(res.run_dir, T.TRAIN_LOSS)
    before = loss.loc[BAD - 10 : BAD - 1].median()
    assert loss[BAD] > 1.5 * before  # the bad batch was there...
    assert loss.loc[BAD + 1 : BAD + 10].median() < 1.1 * before  # ...and left no mark


def test_warn_trains_to_the_end_records_the_finding_and_changes_nothing(overrides, tmp_path):
    seen = []
    warn = train(
        resolve("tiny", "stable", overrides=[*overrides, "guard=warn", "run_name=warn"]),
        on_finding=seen.append,
    )
    plain = train(resolve("tiny", "stable", overrides=[*overrides, "run_name=plain"]))
    assert warn.stop_reason == "completed" and warn.steps_done == 50
    kinds = [(f["kind"], f["step_start"]) for f in seen]
    assert ("loss-spike", BAD) in kinds and len(kinds) == len(set(kinds))  # each once
    recorded = _meta(warn.run_dir)["guard"]
    assert recorded["action"] == "warn" and recorded["stopped_by"] is None
    assert [(f["kind"], f["step_start"]) for f in recorded["findings"]] == kinds
    # without --guard: no guard record, no guard series, and the very same trajectory
    assert plain.guard is None and "guard" not in _meta(plain.run_dir)
    assert _meta(plain.run_dir)["stop_reason"] == "completed"
    metrics = set(pd.read_csv(plain.run_dir / "metrics.csv")["metric"])
    assert GUARD_SKIPPED not in metrics
    pd.testing.assert_series_equal(
        _series(warn.run_dir, T.TRAIN_LOSS), _series(plain.run_dir, T.TRAIN_LOSS)
    )


@pytest.mark.slow  # two processes under torchrun: ~10 s of CPU on two cores
def test_stop_under_torchrun_stops_every_rank_at_the_same_step(overrides, tmp_path):
    import os
    import subprocess
    import sys

    sets = [kv for kv in overrides if not kv.startswith(("threads=", "out_dir="))]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "stabdiag", "train", "--out", str(tmp_path), "--name", "ddp", "--no-analyze",
           "--guard", "stop", "--set", "device=cpu", *(a for kv in sets for a in ("--set", kv))]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]  # no rank hung or reported a signal
    assert done.stderr.count(f"guard: warning loss-spike at step {BAD}") == 1  # rank 0 alone
    meta = _meta(tmp_path / "ddp")
    assert meta["stop_reason"] == "guard" and BAD < meta["steps_done"] <= BAD + 5
    ranks = pd.read_csv(tmp_path / "ddp" / "metrics.csv")
    last = ranks[ranks["metric"] == T.TRAIN_LOSS].groupby("rank")["step"].max()
    assert list(last) == [meta["steps_done"] - 1] * 2
