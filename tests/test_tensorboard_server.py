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

TB = shutil.which("tensorboard") or (str(Path(sys.executable).with_name("tensorboard"))
                                     if Path(sys.executable).with_name("tensorboard").exists() else None)
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
        vals = {"train/loss": 4.0 - step * 0.1, "train/grad_norm": 1.0, "train/lr": 1e-4 * step,
                "train/loss_scale": 65536.0}
        summ = Summary(value=[Summary.Value(tag=t, simple_value=v) for t, v in vals.items()])
        w.add_event(Event(wall_time=1.7e9 + step, step=step, summary=summ))
    w.close()


@pytest.mark.skipif(TB is None, reason="tensorboard executable not installed")
def test_tensorboard_serves_our_tags(tmp_path: Path) -> None:
    run = tmp_path / "logs" / "run1"
    run.mkdir(parents=True)
    _write_events(run)
    port = _free_port()
    proc = subprocess.Popen(
        [TB, "--logdir", str(tmp_path / "logs"), "--host", "127.0.0.1", "--port", str(port),
         "--reload_interval", "1", "--load_fast", "false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}/data/plugin/scalars/tags"
        deadline, tags, last = time.monotonic() + 60, {}, None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"tensorboard exited early: {proc.stderr.read().decode(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    tags = json.loads(resp.read())
                if "run1" in tags and set(TAGS) <= set(tags["run1"]):
                    break
            except OSError as e:
                last = e
            time.sleep(0.5)
        assert "run1" in tags, f"no run served within 60 s (last error: {last}; got {tags})"
        assert set(TAGS) <= set(tags["run1"])
        q = f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?run=run1&tag=train%2Floss"
        with urllib.request.urlopen(q, timeout=5) as resp:
            points = json.loads(resp.read())
        assert [p[1] for p in points] == list(range(20))
        assert points[0][2] == pytest.approx(4.0)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
