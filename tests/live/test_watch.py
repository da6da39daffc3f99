"""`stabdiag watch` on logs that are being written: found within seconds, exit codes, and the live
verdict equal to `analyze` of the finished files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner
from watch_util import SPIKE, Writer, csv_text, jsonl_text, llmc_text, spike_offset, tb_bytes

from stabdiag.cli import app
from stabdiag.live.watch import Watcher

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "STABDIAG_NO_CACHE": "1", "COLUMNS": "200"}


def _source(fmt: str, tmp: Path, spike: bool = True) -> tuple[Path, bytes]:
    """(where the log will be written, its full content)."""
    if fmt == "csv":
        return tmp / "run" / "train.csv", csv_text(spike)
    if fmt == "jsonl":
        return tmp / "run" / "train.jsonl", jsonl_text(spike)
    if fmt == "llmc":
        return tmp / "gpt2" / "main.log", llmc_text(spike)
    data, name = tb_bytes(tmp, spike)
    return tmp / "run" / "tbrun" / name, data


def _watch(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "stabdiag", "watch", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "llmc", "tensorboard"])
def test_spike_found_within_seconds_of_being_written_and_exit_1(tmp_path, fmt):
    path, data = _source(fmt, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    proc = _watch(
        [
            str(tmp_path / ("gpt2" if fmt == "llmc" else "run")),
            "--interval",
            "0.1",
            "--idle-timeout",
            "30",
            "--fail-on",
            "warning",
            "--format",
            "jsonl",
            "--select",
            "loss-spike",
        ]
    )
    time.sleep(2.0)  # let it start (imports) before the run begins
    writer = Writer(path, data, mark=spike_offset(data, fmt))
    writer.start()
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        writer.stop.set()
    done = time.monotonic()
    assert proc.returncode == 1, err
    rows = [json.loads(x) for x in out.splitlines()]
    assert [(r["kind"], r["step_start"], r["change"]) for r in rows] == [
        ("loss-spike", SPIKE, "new")
    ]
    assert writer.marked_at is not None
    latency = done - writer.marked_at
    assert latency < 5.0, f"found {latency:.1f} s after the spike was written"
    assert "dropped" not in err and "bad" not in err  # half-written lines are not damage


def _analyze_json(paths: list[Path]) -> dict:
    r = CliRunner().invoke(
        app, ["analyze", *map(str, paths), "--format", "json", "--fail-on", "never"]
    )
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "llmc", "tensorboard"])
def test_live_verdict_equals_analyze_of_the_finished_files(tmp_path, fmt):
    path, data = _source(fmt, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    w = Watcher([path.parent])
    live_events, polls = [], 0
    rng = np.random.default_rng(1)
    pos = 0
    with open(path, "ab", buffering=0) as fh:
        while pos < len(data):  # ragged appends, a poll after each: ~100 pieces
            n = int(rng.integers(20, 400))
            fh.write(data[pos : pos + n])
            pos += n
            live_events += w.poll().events
            polls += 1
    live_events += w.finish().events
    assert polls > 40
    w.close()
    offline = _analyze_json([path.parent])
    live = [f.to_dict() for f in w.findings]
    assert live == offline["findings"]
    assert {s.to_dict()["kind"] for s in w.skipped} == {s["kind"] for s in offline["skipped"]}
    # every finding of the final verdict was announced while the run was being written
    announced = {(e.finding.kind, e.finding.step_start) for e in live_events}
    assert {(f["kind"], f["step_start"]) for f in offline["findings"]} <= announced


def test_healthy_run_exits_0_at_idle_timeout_with_the_json_report(tmp_path):
    path, data = _source("csv", tmp_path, spike=False)
    path.parent.mkdir(parents=True)
    path.write_bytes(data[:1000])
    proc = _watch([str(path), "--interval", "0.1", "--idle-timeout", "1.5", "--format", "json"])
    time.sleep(1.0)
    with open(path, "ab") as fh:
        fh.write(data[1000:])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    report = json.loads(out)
    assert report["runs"][0]["steps"] == [0, 299]
    assert not [f for f in report["findings"] if f["severity"] != "info"]
    assert "no new data for 1.5 s" in err


def test_pid_exit_ends_the_watch(tmp_path):
    path, data = _source("jsonl", tmp_path, spike=False)
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    proc = _watch(
        [str(path), "--interval", "0.1", "--idle-timeout", "0", "--pid", str(sleeper.pid)]
    )
    out, err = proc.communicate(timeout=60)
    sleeper.wait()
    assert proc.returncode == 0, err
    assert f"process {sleeper.pid} exited" in err


def test_on_finding_gets_the_finding_as_json_on_stdin(tmp_path):
    path, data = _source("csv", tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    sink = tmp_path / "notified.jsonl"
    r = CliRunner().invoke(
        app,
        [
            "watch",
            str(path),
            "--interval",
            "0.05",
            "--idle-timeout",
            "0.2",
            "--fail-on",
            "never",
            "--min-severity",
            "warning",
            "--on-finding",
            f"sh -c 'cat >> {sink}'",
        ],
    )
    assert r.exit_code == 0, r.output
    got = [json.loads(x) for x in sink.read_text().splitlines()]
    assert ("loss-spike", SPIKE) in {(g["kind"], g["step_start"]) for g in got}
    assert all(g["severity"] in ("warning", "error") for g in got)


def test_truncated_and_replaced_files_warn_once_and_are_read_again(tmp_path):
    path, data = _source("csv", tmp_path, spike=False)
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    w = Watcher([path.parent])
    assert not w.poll().warnings
    path.write_bytes(data[: len(data) // 3])  # truncated in place
    res = w.poll()
    assert [m for m in res.warnings if "truncated while watched" in m]
    tmp = path.with_suffix(".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # replaced (a new inode), as log rotation does
    res = w.poll()
    assert [m for m in res.warnings if "replaced while watched" in m]
    assert not w.poll().warnings
    w.finish()
    (run,) = w.run_data()
    assert run.series["train/loss"].steps.tolist() == list(range(300))
    w.close()


def test_bad_paths_and_options_are_one_line_exit_2(tmp_path):
    r = CliRunner().invoke(app, ["watch", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "nothing at that path" in r.output
    r = CliRunner().invoke(app, ["watch", str(tmp_path), "--format", "xml"])
    assert r.exit_code == 2 and "--format" in r.output


def test_ctrl_c_stops_cleanly_with_the_verdict_so_far(tmp_path):
    import signal

    path, data = _source("csv", tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    marker = tmp_path / "seen"
    proc = _watch(
        [
            str(path),
            "--interval",
            "0.1",
            "--idle-timeout",
            "0",
            "--fail-on",
            "never",
            "--on-finding",
            f"sh -c 'cat > {marker}'",
        ]
    )
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:  # the loop is running
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "watch ended (interrupted)" in err and "Traceback" not in err
    assert "loss-spike" in out  # what was found so far was printed


def _state(steps):
    hist = [
        {"step": s, "loss": 2.0 + 1.0 / (s + 1), "learning_rate": 1e-4, "grad_norm": 1.0}
        for s in steps
    ]
    return json.dumps({"global_step": steps[-1], "log_history": hist})


def test_rewritten_formats_are_reread_whole(tmp_path):
    out = tmp_path / "hf_out"
    (out / "checkpoint-40").mkdir(parents=True)
    (out / "checkpoint-40" / "trainer_state.json").write_text(_state(list(range(1, 41))))
    w = Watcher([tmp_path])
    w.poll()
    assert [r.name for r in w.run_data()] == ["hf_out"]
    (out / "checkpoint-80").mkdir()
    (out / "checkpoint-80" / "trainer_state.json").write_text(_state(list(range(1, 81))))
    w.poll()
    w.finish()
    (run,) = w.run_data()
    assert run.name == "hf_out" and run.series["train/loss"].steps.tolist() == list(range(1, 81))
    assert [f.to_dict() for f in w.findings] == _analyze_json([tmp_path])["findings"]
    w.close()


def test_lightning_csv_rewritten_with_a_new_header_is_read_again(tmp_path):
    d = tmp_path / "lightning_logs" / "version_0"
    d.mkdir(parents=True)
    p = d / "metrics.csv"
    p.write_text("step,train_loss\n" + "".join(f"{s},{3 - s / 100}\n" for s in range(50)))
    w = Watcher([tmp_path])
    w.poll()
    # CSVLogger rewrites the file when a new metric appears: new header, all rows again
    p.write_text(
        "epoch,step,train_loss,val_loss\n"
        + "".join(f"0,{s},{3 - s / 100},\n" for s in range(80))
        + "0,79,,2.5\n"
    )
    res = w.poll()
    assert [m for m in res.warnings if "rewritten while watched" in m]
    w.finish()
    (run,) = w.run_data()
    assert run.series["train/loss"].steps.tolist() == list(range(80))
    assert run.series["val/loss"].values.tolist() == [2.5]
    w.close()
