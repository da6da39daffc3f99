"""Training runs that end badly: a signal, a crash mid-checkpoint, an unwritable or full disk.

The signal tests drive the real CLI in a subprocess (`python -m stabdiag train`), send SIGTERM or
SIGINT once metrics.csv shows the first logged steps, then run the printed `--resume` command and
compare every step's loss with an uninterrupted run (fp32, CPU, one thread).
"""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from stabdiag import table as T
from stabdiag.errors import TrainError
from stabdiag.train import checkpoint, loop, resolve, train

TINY = [
    "n_embd=32",
    "block_size=32",
    "batch_size=8",
    "log_interval=5",
    "eval_interval=1000",
    "data_max_bytes=200000",
    "warmup_steps=5",
    "dropout=0.1",
    "tensorboard=false",
]
CLI_STEPS = 150  # ~2 s of training: the signal lands long before the end


def _losses(run_dir: Path) -> pd.Series:
    frame = pd.read_csv(run_dir / "metrics.csv")
    s = frame[frame["metric"] == T.TRAIN_LOSS].drop_duplicates("step", keep="last")
    return s.set_index("step")["value"]


def _ckpt_step(run_dir: Path) -> int:
    state = torch.load(run_dir / "checkpoints" / checkpoint.LATEST, weights_only=True)
    return int(state["step"])


def _baseline(out: Path, steps: int, extra: tuple[str, ...] = ()) -> pd.Series:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = resolve(
            "tiny",
            "stable",
            overrides=[*TINY, f"steps={steps}", f"out_dir={out}", "run_name=full", *extra],
        )
        return _losses(train(cfg).run_dir)
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cli_baseline(tmp_path_factory) -> pd.Series:
    return _baseline(tmp_path_factory.mktemp("full"), CLI_STEPS)


@pytest.fixture(scope="module")
def short_baseline(tmp_path_factory) -> pd.Series:
    return _baseline(tmp_path_factory.mktemp("full"), 30)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "200"}


# ----------------------------------------------------------------------------- signals, end to end


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_cleanly_and_resume_matches(tmp_path, cli_baseline, sig, code):
    sets = [a for kv in [*TINY, f"steps={CLI_STEPS}"] for a in ("--set", kv)]
    cmd = [
        sys.executable,
        "-m",
        "stabdiag",
        "train",
        "--preset",
        "tiny",
        *sets,
        "--out",
        "runs",
        "--name",
        "cut",
        "--no-analyze",
    ]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    metrics = tmp_path / "runs" / "cut" / "metrics.csv"
    deadline = time.monotonic() + 60
    while not (metrics.exists() and T.TRAIN_LOSS in metrics.read_text()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no logged steps within 60 s"
        time.sleep(0.02)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr

    run = tmp_path / "runs" / "cut"
    done = _ckpt_step(run)  # the checkpoint loads and is at the last finished step
    assert 0 < done < CLI_STEPS
    assert list(_losses(run).index) == list(range(done))  # metrics flushed through that step
    assert f"stopped by {sig.name}" in stderr and "latest.pt" in stderr

    hint = next(line for line in stderr.splitlines() if line.startswith("to continue: "))
    argv = shlex.split(hint.removeprefix("to continue: "))
    assert argv[0] == "stabdiag" and argv[-1] == "--resume"
    resumed = subprocess.run(
        [sys.executable, "-m", "stabdiag", *argv[1:]],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    got = _losses(run)
    assert list(got.index) == list(range(CLI_STEPS))
    np.testing.assert_allclose(got.to_numpy(), cli_baseline.to_numpy(), rtol=0, atol=1e-6)


def test_sigterm_in_process_is_recorded_and_handlers_restored(tmp_path):
    def term_at_10(steps_done, metrics):
        if steps_done == 10:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    cfg = resolve("tiny", "stable", overrides=[*TINY, "steps=30", f"out_dir={tmp_path}"])
    result = train(cfg, progress=term_at_10)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert result.interrupted and result.stop_reason == "interrupted" and result.steps_done == 10
    assert result.stop_signal == "SIGTERM" and result.exit_code == 143
    assert result.checkpoint == result.run_dir / "checkpoints" / "latest.pt"
    assert _ckpt_step(result.run_dir) == 10


def test_hard_interrupt_inside_a_step_keeps_the_previous_checkpoint(
    tmp_path, monkeypatch, short_baseline
):
    """A second Ctrl-C lands after the optimizer updated step 12 but before the step was
    recorded: saving now would store step-13 weights under step 12, so the step-10 one stays."""
    real = loop._Loop.train_step

    def cut_after_update(self, step):
        row = real(self, step)
        if step == 12:
            raise KeyboardInterrupt
        return row

    monkeypatch.setattr(loop._Loop, "train_step", cut_after_update)
    cfg = resolve(
        "tiny",
        "stable",
        overrides=[
            *TINY,
            "steps=30",
            "checkpoint_interval=5",
            f"out_dir={tmp_path}",
            "run_name=torn",
        ],
    )
    result = train(cfg)
    assert result.interrupted and result.steps_done == 12 and result.stop_signal == "SIGINT"
    assert _ckpt_step(result.run_dir) == 10
    assert list(_losses(result.run_dir).index) == list(range(12))

    monkeypatch.setattr(loop._Loop, "train_step", real)
    resumed = train(cfg, resume=True)
    assert resumed.steps_done == 30 and not resumed.interrupted
    np.testing.assert_allclose(
        _losses(resumed.run_dir).to_numpy(), short_baseline.to_numpy(), rtol=0, atol=1e-6
    )


# ----------------------------------------------------------------------------- crash mid-checkpoint


def test_crash_mid_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch, short_baseline):
    real_save = torch.save

    def half_then_disk_full(state, f, *args, **kwargs):
        if state["step"] == 20:
            f.write(b"PK\x03\x04 half a zip")  # what a full disk leaves behind
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(state, f, *args, **kwargs)

    monkeypatch.setattr(
        torch, "save", half_then_disk_full
    )  # checkpoint imports torch when it saves
    cfg = resolve(
        "tiny",
        "stable",
        overrides=[
            *TINY,
            "steps=30",
            "checkpoint_interval=10",
            f"out_dir={tmp_path}",
            "run_name=crash",
        ],
    )
    with pytest.raises(TrainError, match="No space left on device.*previous checkpoint is kept"):
        train(cfg)
    ckpts = tmp_path / "crash" / "checkpoints"
    assert _ckpt_step(tmp_path / "crash") == 10
    assert not (ckpts / "latest.pt.tmp").exists()

    monkeypatch.setattr(torch, "save", real_save)
    (ckpts / "latest.pt.tmp").write_bytes(b"PK\x03\x04 left by a killed process")
    resumed = train(cfg, resume=True)
    assert resumed.steps_done == 30 and _ckpt_step(resumed.run_dir) == 30
    assert not (ckpts / "latest.pt.tmp").exists()
    np.testing.assert_allclose(
        _losses(resumed.run_dir).to_numpy(), short_baseline.to_numpy(), rtol=0, atol=1e-6
    )


# ----------------------------------------------------------------------------- preflight


@pytest.fixture
def no_data(monkeypatch):
    """Preflight must fail before the corpus is loaded (the slow part of a real start)."""

    def boom(*args, **kwargs):
        raise AssertionError("preflight should have failed before loading data")

    monkeypatch.setattr(loop, "load_corpus", boom)


def test_run_dir_under_a_file_fails_before_training(tmp_path, no_data):
    (tmp_path / "afile").write_text("not a directory")
    cfg = resolve(
        "tiny", "stable", overrides=[*TINY, f"out_dir={tmp_path / 'afile' / 'runs'}", "run_name=r"]
    )
    with pytest.raises(
        TrainError,
        match=r"afile/runs/r: cannot create the run directory: .*afile "
        r"is not a directory",
    ):
        train(cfg)


def test_unwritable_run_dir_fails_before_training(tmp_path, monkeypatch, no_data):
    def fsync_fails(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", fsync_fails)
    cfg = resolve("tiny", "stable", overrides=[*TINY, f"out_dir={tmp_path / 'runs'}", "run_name=r"])
    with pytest.raises(TrainError, match=r"runs/r: cannot write the run directory .*Input/output"):
        train(cfg)
    assert list(tmp_path.iterdir()) == []  # neither the probe file nor an empty run directory


def test_full_disk_fails_before_training(tmp_path, monkeypatch, no_data):
    monkeypatch.setattr(
        shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 4096)
    )
    cfg = resolve("tiny", "stable", overrides=[*TINY, f"out_dir={tmp_path}", "run_name=r"])
    with pytest.raises(TrainError, match=r"/r: not enough disk space: 0\.0 MiB free, about .* MiB"):
        train(cfg)
    assert not (tmp_path / "r").exists()


def test_cli_preflight_error_is_one_line_exit_2(tmp_path, no_data):
    from typer.testing import CliRunner

    from stabdiag.cli import app

    (tmp_path / "afile").write_text("")
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--out",
            str(tmp_path / "afile" / "runs"),
            "--no-analyze",
            *[a for kv in TINY for a in ("--set", kv)],
        ],
    )
    assert result.exit_code == 2
    assert "is not a directory" in result.output and "Traceback" not in result.output
