"""The real TensorBoard server serves the tags our writers produce (issue 6, "Real TensorBoard").

Starts ``tensorboard --logdir`` on 127.0.0.1 and a free port, waits at most 60 s for the scalars
plugin to list our run, checks the tags over HTTP, then stops the server. Skipped only when the
``tensorboard`` executable is missing.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

TB = shutil.which("tensorboard") or (
    str(Path(sys.executable).with_name("tensorboard"))
    if Path(sys.executable).with_name("tensorboard").exists()
    else None
)
TAGS = ("train/loss", "train/grad_norm", "train/lr", "train/loss_scale")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_events(logdir: Path) -> None:
    """Scalars as torch's SummaryWriter writes them (simple_value), with our canonical tags."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    w = EventFileWriter(str(logdir))
    for step in range(20):
        vals = {
            "train/loss": 4.0 - step * 0.1,
            "train/grad_norm": 1.0,
            "train/lr": 1e-4 * step,
            "train/loss_scale": 65536.0,
        }
        summ = Summary(value=[Summary.Value(tag=t, simple_value=v) for t, v in vals.items()])
        w.add_event(Event(wall_time=1.7e9 + step, step=step, summary=summ))
    w.close()


def _serve_tags(logdir: Path, run: str, want: tuple[str, ...]) -> dict[str, object]:
    """Start tensorboard over ``logdir``, wait (<= 60 s) until ``run`` lists ``want``, then stop it."""
    assert TB is not None
    port = _free_port()
    proc = subprocess.Popen(
        [
            TB,
            "--logdir",
            str(logdir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--reload_interval",
            "1",
            "--load_fast",
            "false",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}/data/plugin/scalars/tags"
        deadline, tags, last = time.monotonic() + 60, {}, None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(
                    f"tensorboard exited early: {proc.stderr.read().decode(errors='replace')[-2000:]}"
                )
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    tags = json.loads(resp.read())
                if run in tags and set(want) <= set(tags[run]):
                    break
            except OSError as e:
                last = e
            time.sleep(0.5)
        assert run in tags, f"no run {run!r} served within 60 s (last error: {last}; got {tags})"
        assert set(want) <= set(tags[run]), tags[run]
        q = f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?run={run}&tag=train%2Floss"
        with urllib.request.urlopen(q, timeout=5) as resp:
            return {"tags": tags[run], "loss": json.loads(resp.read())}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.skipif(TB is None, reason="tensorboard executable not installed")
def test_tensorboard_serves_our_tags(tmp_path: Path) -> None:
    run = tmp_path / "logs" / "run1"
    run.mkdir(parents=True)
    _write_events(run)
    got = _serve_tags(tmp_path / "logs", "run1", TAGS)
    points = got["loss"]
    assert [p[1] for p in points] == list(range(20))
    assert points[0][2] == pytest.approx(4.0)


@pytest.mark.slow
@pytest.mark.skipif(TB is None, reason="tensorboard executable not installed")
def test_tensorboard_serves_a_stabdiag_train_run(tmp_path: Path) -> None:
    """The same over a run written by ``stabdiag train`` (needs the ``train`` extra: torch)."""
    pytest.importorskip("torch")
    from typer.testing import CliRunner

    from stabdiag.cli import app

    res = CliRunner().invoke(
        app,
        [
            "train",
            "--preset",
            "tiny",
            "--steps",
            "12",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "logs"),
            "--name",
            "run1",
            "--no-analyze",
        ],
    )
    assert res.exit_code == 0, res.output
    events = list((tmp_path / "logs" / "run1").rglob("events.out.tfevents.*"))
    assert events, "stabdiag train wrote no event file"
    run = events[0].parent.relative_to(tmp_path / "logs").as_posix()
    got = _serve_tags(tmp_path / "logs", run, ("train/loss", "train/grad_norm", "train/lr"))
    assert len(got["loss"]) >= 1
