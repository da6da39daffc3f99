"""Rewind and branch (issue 17): checkpoints kept by policy, `stabdiag branch`, overlays.

One parent run (80 tiny steps, a bad batch at step 60, a checkpoint every 10 steps, 2 kept) is
trained once for the module; the branches train 30 steps or fewer each.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from stabdiag import table as T
from stabdiag.cli import app
from stabdiag.errors import TrainError
from stabdiag.train import checkpoint, resolve, train
from stabdiag.train.branch import plan_branch

SMALL = [
    "n_embd=32",
    "block_size=32",
    "batch_size=8",
    "log_interval=5",
    "eval_interval=40",
    "data_max_bytes=200000",
    "warmup_steps=5",
    "tensorboard=false",
    "dropout=0.1",
]
BAD = 60


def _losses(run_dir) -> pd.Series:
    frame = pd.read_csv(run_dir / "metrics.csv")
    s = frame[frame["metric"] == T.TRAIN_LOSS]
    assert s["step"].is_unique, "a step logged twice"
    return s.set_index("step")["value"]


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = resolve(
            "tiny",
            "stable",
            overrides=[
                *SMALL,
                f"out_dir={out}",
                "run_name=parent",
                "steps=80",
                "checkpoint_interval=10",
                "keep_checkpoints=2",
                f"inject=bad_batch@{BAD}",
            ],
        )
        return train(cfg).run_dir
    finally:
        torch.set_num_threads(before)


def test_checkpoints_are_kept_by_policy_and_the_last_healthy_one_is_pinned(parent):
    meta = json.loads((parent / "run.json").read_text())
    pin = meta["healthy_checkpoint"]
    assert pin["first_finding"]["step"] == BAD and pin["first_finding"]["kind"] == "loss-spike"
    assert pin["step"] == 50  # the last checkpoint strictly before the spike
    kept = [s for s, _ in checkpoint.available(parent / "checkpoints")]
    assert kept == [50, 70, 80]  # the newest 2, and the pinned one rotation must not delete
    latest = torch.load(parent / "checkpoints" / "latest.pt", weights_only=True)
    assert latest["step"] == 80
    state = torch.load(checkpoint.step_file(parent / "checkpoints", 50), weights_only=True)
    assert state["step"] == 50 and state["data"]["next_index"] == 50
    assert state["rng_cpu"].dtype == torch.uint8  # dropout's RNG travels with it


def test_branch_without_changes_reproduces_the_parent(parent):
    plan = plan_branch(parent, 75, name="same")
    assert (plan.step, plan.changes) == (70, {})
    result = train(plan.config, branch=plan)
    assert result.steps_done == 80
    got, want = _losses(result.run_dir), _losses(parent)
    assert list(got.index) == list(range(80))  # the parent's history, then the branch's steps
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=0, atol=1e-6)


def test_branch_skipping_the_bad_batch_removes_the_spike(parent):
    plan = plan_branch(
        parent, BAD, sets=["grad_clip=0.5", "beta2=0.9"], skip=[f"{BAD}:{BAD}"], name="fixed"
    )
    assert plan.step == 50
    result = train(plan.config, branch=plan)
    assert result.steps_done == 80 and result.injected == ()  # the bad batch never happened
    meta = json.loads((result.run_dir / "run.json").read_text())
    assert meta["parent"]["name"] == "parent" and meta["parent"]["step"] == 50
    assert meta["parent"]["changes"] == {
        "beta2": [0.95, 0.9],
        "grad_clip": [1.0, 0.5],
        "skip_batches": [[], [f"{BAD}:{BAD}"]],
    }
    got, want = _losses(result.run_dir), _losses(parent)
    np.testing.assert_array_equal(got.loc[:49].to_numpy(), want.loc[:49].to_numpy())
    assert want[BAD] > want.loc[BAD - 5 : BAD - 1].max() + 1.0  # the parent's spike
    assert got[BAD] < want.loc[BAD - 5 : BAD - 1].max() + 0.5  # gone in the branch
    last = torch.load(result.run_dir / "checkpoints" / "latest.pt", weights_only=True)
    assert {tuple(g["betas"]) for g in last["optimizer"]["param_groups"]} == {(0.9, 0.9)}

    # compare: the parent is the default baseline; --plot overlays both curves
    png = result.run_dir.parent / "overlay.png"
    done = CliRunner().invoke(app, ["compare", str(result.run_dir), "--plot", str(png)])
    assert done.exit_code == 0, done.output
    assert "branch of" in done.output and "vs baseline parent" in done.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plots = result.run_dir.parent / "plots"
    done = CliRunner().invoke(
        app, ["plot", str(result.run_dir), "--out", str(plots), "--image-format", "png"]
    )
    assert done.exit_code == 0, done.output
    assert (plots / "fixed-vs-parent.png").is_file()


def test_branch_refuses_what_cannot_change_mid_run(parent):
    for change in ("n_layer=3", "qk_norm=true", "seed=1"):
        with pytest.raises(TrainError, match="re-run from scratch"):
            plan_branch(parent, BAD, sets=[change])
    with pytest.raises(TrainError, match="batches before it are already trained on"):
        plan_branch(parent, BAD, skip=["45:60"])
    with pytest.raises(
        TrainError, match=r"at or before step 20, found checkpoints at steps: 50, 70, 80"
    ):
        plan_branch(parent, 20)
    with pytest.raises(TrainError, match="unknown config key 'lrr'"):
        plan_branch(parent, BAD, sets=["lrr=1"])


def test_cli_branch_errors_are_one_line(parent, tmp_path):
    done = CliRunner().invoke(app, ["branch", str(parent), "--at", "60", "--set", "norm=rmsnorm"])
    assert done.exit_code == 2 and "re-run from scratch" in done.output
    assert "Traceback" not in done.output and len(done.output.strip().splitlines()) == 1
    done = CliRunner().invoke(app, ["branch", str(tmp_path), "--at", "60"])
    assert done.exit_code == 2 and "found no config.json" in done.output


def test_branch_can_switch_precision_with_a_fresh_loss_scaler(parent):
    plan = plan_branch(parent, 79, sets=["precision=fp16", "loss_scale_init=1024"], name="half")
    assert plan.step == 70
    result = train(plan.config, branch=plan)
    assert result.steps_done == 80 and np.isfinite(result.final_loss)
    frame = pd.read_csv(result.run_dir / "metrics.csv")
    scale = frame[frame["metric"] == T.LOSS_SCALE].set_index("step")["value"]
    assert list(scale.index) == list(range(70, 80)) and scale[70] == 1024.0


def test_branch_from_a_run_with_only_latest_pt(parent, tmp_path):
    """Runs from before step checkpoints kept only checkpoints/latest.pt: run.json's steps_done
    says which step it holds, and the trainer checks the file's own step when it loads it."""
    old = tmp_path / "old"
    (old / "checkpoints").mkdir(parents=True)
    for name in ("config.json", "run.json", "metrics.csv"):
        shutil.copyfile(parent / name, old / name)
    shutil.copyfile(
        checkpoint.step_file(parent / "checkpoints", 70), old / "checkpoints" / "latest.pt"
    )
    with pytest.raises(TrainError, match="found checkpoints at steps: 80"):
        plan_branch(old, 75)  # run.json says 80: nothing at or before 75
    meta = json.loads((old / "run.json").read_text())
    (old / "run.json").write_text(json.dumps({**meta, "steps_done": 70}))
    plan = plan_branch(old, 75, name="from-old")
    assert plan.step == 70 and plan.checkpoint.name == "latest.pt"
    assert train(plan.config, branch=plan).steps_done == 80
    (old / "run.json").write_text(json.dumps({**meta, "steps_done": 60}))
    plan = plan_branch(old, 75, name="lied")
    with pytest.raises(TrainError, match="expected the checkpoint of step 60, found step 70"):
        train(plan.config, branch=plan)
