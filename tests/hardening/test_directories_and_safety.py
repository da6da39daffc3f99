"""Directory pathologies, never unpickling/executing, report escaping, the CLI error boundary."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hardening_util import REAL_LOGS, REPO, SAMPLE_RUNS, event_file, make_pickle_bomb

from stabdiag.sources import load


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "STABDIAG_DEBUG"}
    return subprocess.run(
        [sys.executable, "-m", "stabdiag", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


# --------------------------------------------------------------------------- directories


def test_symlink_loop(tmp_path):
    d = tmp_path / "runs"
    (d / "a").mkdir(parents=True)
    (d / "a" / "r.csv").write_text("step,loss\n1,2\n2,1\n")
    (d / "a" / "loop").symlink_to(d, target_is_directory=True)
    (d / "a" / "self").symlink_to(d / "a", target_is_directory=True)
    (d / "dangling.csv").symlink_to(tmp_path / "nowhere.csv")
    r = load([d])
    assert [i.name for i in r.runs] == ["r"]


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="root reads chmod-000 files; permission denial cannot be shown",
)
def test_unreadable_file_is_reported_not_fatal(tmp_path):
    (tmp_path / "good.csv").write_text("step,loss\n1,2\n2,1\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("step,loss\n1,2\n")
    bad.chmod(0)
    try:
        r = load([tmp_path])
    finally:
        bad.chmod(0o644)
    assert [i.name for i in r.runs] == ["good"]
    assert any("bad.csv" in e for e in r.errors)


def test_ten_thousand_small_files(tmp_path):
    d = tmp_path / "many"
    d.mkdir()
    for i in range(10_000):
        (d / f"note_{i:05d}.txt").write_text("hello\n")
    (d / "r.csv").write_text("step,loss\n1,2\n2,1\n")
    t0 = time.perf_counter()
    r = load([d])
    print(f"10k-file dir: {time.perf_counter() - t0:.2f}s")
    assert [i.name for i in r.runs] == ["many"] or [i.name for i in r.runs] == ["r"]


def test_deeply_nested_tree(tmp_path):
    d = tmp_path
    for i in range(200):
        d = d / f"n{i}"
    d.mkdir(parents=True)
    (d / "r.csv").write_text("step,loss\n1,2\n2,1\n")
    r = load([tmp_path])
    assert len(r.runs) == 1


def test_one_bad_file_does_not_sink_the_directory(tmp_path):
    (tmp_path / "good.csv").write_text("step,loss\n1,2\n2,1\n")
    (tmp_path / "bad.csv").write_text("no step column here\n1\n")
    (tmp_path / "broken.jsonl").write_text("[[[\n{{{\n")
    (tmp_path / "b" / "trainer_state.json").parent.mkdir()
    (tmp_path / "b" / "trainer_state.json").write_text('{"log_history": ' + "[" * 50000)
    r = load([tmp_path])
    assert [i.name for i in r.runs] == ["good"]
    assert len(r.errors) == 3


# --------------------------------------------------------------------------- never unpickle


def test_pickles_beside_logs_are_never_loaded(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    marker = tmp_path / "PWNED"
    for name in (
        "pytorch_model.bin",
        "optimizer.pt",
        "rng_state.pth",
        "training_args.bin",
        "scheduler.pkl",
    ):
        make_pickle_bomb(d / name, marker)
    ck = d / "checkpoint-10"
    ck.mkdir()
    make_pickle_bomb(ck / "optimizer.pt", marker)
    event_file(d / "runs" / "events.out.tfevents.1.host", 30)
    (d / "metrics.jsonl").write_text(
        "".join(f'{{"step": {i}, "loss": {2 - i / 100}}}\n' for i in range(30))
    )
    res = _cli("analyze", str(d), "--format", "json")
    assert not marker.exists()
    assert res.returncode in (0, 1), res.stderr
    runs = json.loads(res.stdout)["runs"]
    assert len(runs) == 2 and all(r["steps"] == [0, 29] for r in runs)
    # Named explicitly, a checkpoint is refused without being opened.
    res = _cli("analyze", str(d / "optimizer.pt"))
    assert res.returncode == 2 and not marker.exists()
    assert len(res.stderr.strip().splitlines()) == 1 and res.stdout == ""


_FORBIDDEN = [
    (re.compile(r"\byaml\.load\("), "yaml.load( (use safe_load / SafeLoader)"),
    (re.compile(r"(?<![\w.])eval\(|\bexec\("), "eval/exec"),
    (re.compile(r"^\s*(?:import pickle|from pickle)|\bpickle\.loads?\("), "pickle"),
    (re.compile(r"\bshell\s*=\s*True|os\.system\("), "a shell"),
]


def test_no_unsafe_loading_in_the_package():
    """No yaml.load/eval/exec/pickle/shell in stabdiag/; torch.load only with weights_only=True,
    and only under train/ (our own checkpoints)."""
    offenders = []
    for p in sorted((REPO / "stabdiag").rglob("*.py")):
        text = p.read_text(encoding="utf-8")
        rel = p.relative_to(REPO).as_posix()
        for pat, what in _FORBIDDEN:
            for m in pat.finditer(text):
                line = text[text.rfind("\n", 0, m.start()) + 1 : text.find("\n", m.start())]
                if not line.lstrip().startswith("#"):
                    offenders.append(f"{rel}: {what}: {line.strip()}")
        for m in re.finditer(r"torch\.load\(", text):
            call = text[m.start() : text.find(")", m.start()) + 200]
            if not rel.startswith("stabdiag/train/") or "weights_only=True" not in call:
                offenders.append(f"{rel}: torch.load without weights_only=True")
    assert not offenders, "\n".join(offenders)


# --------------------------------------------------------------------------- escaping

HOSTILE = "<script>alert(1)</script>|*x*_y_`z`[l](http://e)"


def _hostile_dir(tmp_path: Path) -> Path:
    d = tmp_path / HOSTILE.replace("/", "_")
    d.mkdir()
    rows = ["step,loss,<img src=x onerror=alert(2)>|tag"]
    for i in range(300):
        loss = 2.0 - i / 1000 + (50.0 if i == 200 else 0.0)
        rows.append(f"{i},{loss},{i}")
    (d / f"{HOSTILE.replace('/', '_')}.csv").write_text("\n".join(rows) + "\n")
    return d


@pytest.mark.parametrize("fmt", ["html", "markdown"])
def test_reports_escape_log_strings(tmp_path, fmt):
    res = _cli("analyze", str(_hostile_dir(tmp_path)), "--format", fmt)
    assert res.returncode in (0, 1), res.stderr
    out = res.stdout
    assert "<script>alert" not in out and "<img src=x" not in out  # our own plot <img> is fine
    if fmt == "markdown":
        # every table row keeps its cell count: a "|" in a name cannot split cells
        for line in out.splitlines():
            if line.startswith("|") and "script" in line:
                assert "\\|" in line or "&#124;" in line or "&vert;" in line, line


# --------------------------------------------------------------------------- CLI boundary


@pytest.mark.parametrize(
    "make",
    [
        lambda p: p / "nothing-here",
        lambda p: (p.joinpath("x.csv").write_text("a,b,c\n1,2,3\n"), p / "x.csv")[1],
        lambda p: (p.joinpath("x.jsonl").write_bytes(b"\xff\xfe[[[\n"), p / "x.jsonl")[1],
        lambda p: (
            p.joinpath("trainer_state.json").write_text("[" * 100000),
            p / "trainer_state.json",
        )[1],
        lambda p: (
            p.joinpath("events.out.tfevents.1.x").write_bytes(b"\x00" * 7),
            p / "events.out.tfevents.1.x",
        )[1],
        lambda p: (
            p.joinpath("pytorch_model.bin").write_bytes(b"\x80\x04junk"),
            p / "pytorch_model.bin",
        )[1],
        lambda p: (p.joinpath("empty").mkdir(), p / "empty")[1],
    ],
)
def test_cli_bad_input_one_line_exit_2(tmp_path, make):
    target = make(tmp_path)
    res = _cli("analyze", str(target))
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr


@pytest.mark.skipif(not REAL_LOGS.is_dir(), reason="../shared/real_logs is not present")
def test_real_logs_and_samples_with_junk_analyze(tmp_path):
    """Real logs plus a junk file and a pickle bomb in one call: all readable runs are read."""
    marker = tmp_path / "PWNED"
    make_pickle_bomb(tmp_path / "pytorch_model.bin", marker)
    (tmp_path / "junk.csv").write_bytes(os.urandom(4096))
    res = _cli("analyze", str(REAL_LOGS), str(SAMPLE_RUNS), str(tmp_path), "--format", "json")
    assert res.returncode in (0, 1, 2) and not marker.exists()
    if res.returncode != 2:
        assert len(json.loads(res.stdout)["runs"]) >= 15
