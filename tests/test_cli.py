"""CLI contract: exit codes 0/1/2, stdout vs stderr, the JSON schema, help on every command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from common_util import SAMPLE_RUNS
from typer.testing import CliRunner

from stabdiag.cli import app

runner = CliRunner()


def write_csv(path: Path, loss: np.ndarray, grad: np.ndarray | None = None) -> Path:
    cols = ["step", "loss"] + (["grad_norm"] if grad is not None else [])
    rows = [",".join(cols)]
    for i, v in enumerate(loss):
        rows.append(
            ",".join([str(i), f"{v:.6g}"] + ([f"{grad[i]:.6g}"] if grad is not None else []))
        )
    path.write_text("\n".join(rows) + "\n")
    return path


def healthy(n: int = 800, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    s = np.arange(n)
    return (2.0 + 3.0 * (1 + s / 30) ** -0.6) * np.exp(rng.normal(0, 0.01, n))


@pytest.fixture
def clean_csv(tmp_path: Path) -> Path:
    return write_csv(
        tmp_path / "clean.csv", healthy(), np.full(800, 1.0) + 0.01 * np.sin(np.arange(800))
    )


@pytest.fixture
def diverging_csv(tmp_path: Path) -> Path:
    loss = healthy()
    loss[400:] = loss[400] * np.exp(np.arange(400) / 60)
    loss[790:] = np.nan
    return write_csv(tmp_path / "bad.csv", loss)


def test_help_on_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in ("analyze", "explain", "series", "formats"):
        assert cmd in result.output
        r = runner.invoke(app, [cmd, "--help"])
        assert r.exit_code == 0, cmd


def test_clean_run_exits_0(clean_csv: Path) -> None:
    r = runner.invoke(app, ["analyze", str(clean_csv)])
    assert r.exit_code == 0, r.output
    assert "healthy" in r.stdout


def test_bad_run_exits_1_and_json_contract(diverging_csv: Path) -> None:
    r = runner.invoke(app, ["analyze", str(diverging_csv), "--format", "json"])
    assert r.exit_code == 1, r.output
    doc = json.loads(r.stdout)
    assert doc["schema_version"] == 1
    assert set(doc) >= {"runs", "findings", "skipped", "remedies"}
    assert {"name", "path", "format", "steps", "metrics", "warnings"} <= set(doc["runs"][0])
    f = doc["findings"][0]
    assert set(f) == {
        "code",
        "kind",
        "severity",
        "run",
        "metric",
        "step_start",
        "step_end",
        "message",
        "evidence",
    }
    assert any(x["severity"] == "error" for x in doc["findings"])
    assert {"kind", "run", "rank", "title", "actions", "why", "references"} <= set(
        doc["remedies"][0]
    )
    # a loss-only run: grad-norm checks are reported as not checked, never silent
    assert any(s["kind"] == "grad-spike" for s in doc["skipped"])


def test_fail_on_levels(diverging_csv: Path) -> None:
    assert runner.invoke(app, ["analyze", str(diverging_csv), "--fail-on", "never"]).exit_code == 0
    assert runner.invoke(app, ["analyze", str(diverging_csv), "--fail-on", "bogus"]).exit_code == 2


def test_select_and_ignore(diverging_csv: Path) -> None:
    r = runner.invoke(app, ["analyze", str(diverging_csv), "-f", "json", "--select", "restart"])
    assert r.exit_code == 0
    assert json.loads(r.stdout)["findings"] == []
    r = runner.invoke(
        app, ["analyze", str(diverging_csv), "-f", "json", "--ignore", "nonexistent-kind"]
    )
    assert r.exit_code == 2


def test_output_file(diverging_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    r = runner.invoke(app, ["analyze", str(diverging_csv), "-f", "json", "-o", str(out)])
    assert r.exit_code == 1
    assert json.loads(out.read_text())["findings"]


def test_missing_path_is_exit_2_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "stabdiag", "analyze", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope" in lines[0] and "Traceback" not in proc.stderr


def test_empty_dir_and_checkpoint_only_dir_exit_2(tmp_path: Path) -> None:
    assert runner.invoke(app, ["analyze", str(tmp_path)]).exit_code == 2
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04garbage")
    r = runner.invoke(app, ["analyze", str(tmp_path)])
    assert r.exit_code == 2


def test_run_without_loss_is_not_judged(tmp_path: Path) -> None:
    p = tmp_path / "m.csv"
    p.write_text("step,throughput\n" + "\n".join(f"{i},{100 + i}" for i in range(50)) + "\n")
    r = runner.invoke(app, ["analyze", str(p)])
    assert r.exit_code == 2
    r = runner.invoke(app, ["analyze", str(p), "--map", "train/loss=throughput"])
    assert r.exit_code in (0, 1)


def test_one_bad_file_does_not_lose_the_good_ones(tmp_path: Path, clean_csv: Path) -> None:
    (clean_csv.parent / "broken.jsonl").write_text('{"step": 1, "loss": \n')
    r = runner.invoke(app, ["analyze", str(clean_csv.parent), "-f", "json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert any(run["name"].startswith("clean") for run in doc["runs"])


def test_explain_every_kind() -> None:
    from stabdiag.detectors import DETECTORS

    for d in DETECTORS:
        r = runner.invoke(app, ["explain", d.kind])
        assert r.exit_code == 0 and d.code in r.stdout
        assert "What it detects" in r.stdout
        assert f"[tool.stabdiag.detectors.{d.kind}]" in r.stdout
    assert runner.invoke(app, ["explain", "nope"]).exit_code == 2
    r = runner.invoke(app, ["explain", "--list"])
    assert r.exit_code == 0 and "loss-spike" in r.stdout


def test_series_shows_mapping() -> None:
    r = runner.invoke(app, ["series", str(SAMPLE_RUNS / "loss_spike.csv")])
    assert r.exit_code == 0, r.output
    assert "train/loss" in r.stdout and "grad_norm" in r.stdout


def test_version() -> None:
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.startswith("stabdiag ")


def test_policy_thresholds_reach_the_detectors(tmp_path: Path) -> None:
    spike = str(SAMPLE_RUNS / "loss_spike.csv")
    r = runner.invoke(app, ["analyze", spike, "-f", "json", "--fail-on", "never"])
    assert "loss-spike" in {f["kind"] for f in json.loads(r.stdout)["findings"]}
    policy = tmp_path / "stabdiag.toml"
    policy.write_text("[detectors.loss-spike]\nmin_ratio = 100.0\n")
    r = runner.invoke(
        app, ["analyze", spike, "-f", "json", "--fail-on", "never", "--config", str(policy)]
    )
    assert r.exit_code == 0, r.output
    assert "loss-spike" not in {f["kind"] for f in json.loads(r.stdout)["findings"]}


def test_output_never_overwrites_an_input(tmp_path: Path, clean_csv: Path) -> None:
    before = clean_csv.read_bytes()
    r = runner.invoke(app, ["analyze", str(clean_csv), "-f", "json", "-o", str(clean_csv)])
    assert r.exit_code == 2 and clean_csv.read_bytes() == before
    other = tmp_path / "other.csv"
    other.write_bytes(before)
    r = runner.invoke(app, ["analyze", str(tmp_path), "-f", "json", "-o", str(other)])
    assert r.exit_code == 2 and other.read_bytes() == before
    r = runner.invoke(
        app, ["analyze", str(tmp_path), "-f", "json", "-o", str(tmp_path / "report.json")]
    )
    assert r.exit_code == 0, r.output


def test_write_atomic_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from stabdiag.atomic import write_atomic

    target = tmp_path / "report.json"
    write_atomic(target, "old")

    def boom(*a: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_atomic(target, "new" * 1000)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_error_lines_keep_square_brackets(tmp_path: Path) -> None:
    """File names and hints such as stabdiag[train] must not be eaten as console markup."""
    proc = subprocess.run(
        [sys.executable, "-m", "stabdiag", "analyze", str(tmp_path / "run[1]")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "run[1]" in proc.stderr


# --------------------------------------------------------------------------- named paths that cannot be read
# Issue 15 item 5: a path named on the command line that cannot be read is reported (one line on
# stderr, and in the report's unreadable list) and the other paths are still analysed, as a bad
# file inside a directory is; exit 2 only when nothing could be read.


def _unreadable_kinds(tmp_path: Path) -> dict[str, Path | str]:
    (tmp_path / "notes.txt").write_text("hello, not a log\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "nostep.csv").write_text("a,b\n1,2\n")  # sniffed as CSV, rejected by its reader
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    return {
        "missing": tmp_path / "missing.csv",
        "unknown format": tmp_path / "notes.txt",
        "no logs": tmp_path / "empty",
        "rejected": tmp_path / "nostep.csv",
        "fifo": fifo,
        "remote": "gs://bucket/run",
    }


@pytest.mark.parametrize(
    "kind", ["missing", "unknown format", "no logs", "rejected", "fifo", "remote"]
)
def test_unreadable_named_path_is_reported_and_the_others_analysed(
    tmp_path: Path, clean_csv: Path, diverging_csv: Path, kind: str
) -> None:
    bad = _unreadable_kinds(tmp_path)[kind]
    name = str(bad) if kind == "remote" else Path(bad).name
    r = runner.invoke(app, ["analyze", str(clean_csv), str(bad), "-f", "json"])
    assert r.exit_code == 0, r.output  # the exit code is the good run's: healthy
    doc = json.loads(r.stdout)
    assert [run["name"] for run in doc["runs"]] == ["clean"]
    assert len(doc["errors"]) == 1 and name in doc["errors"][0]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and name in lines[0], r.stderr
    r = runner.invoke(app, ["analyze", str(bad), str(diverging_csv)])
    assert r.exit_code == 1, r.output  # findings decide, not the unreadable path
    assert "unreadable:" in r.stdout and name in re.sub(r"\s+", "", r.stdout)  # in the report too


@pytest.mark.parametrize(
    "kind", ["missing", "unknown format", "no logs", "rejected", "fifo", "remote"]
)
def test_only_unreadable_paths_exit_2_with_one_line(tmp_path: Path, kind: str) -> None:
    bad = _unreadable_kinds(tmp_path)[kind]
    r = runner.invoke(app, ["analyze", str(bad)])
    assert r.exit_code == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert (str(bad) if kind == "remote" else Path(bad).name) in lines[0]


def test_several_unreadable_paths_are_all_named(tmp_path: Path) -> None:
    r = runner.invoke(app, ["analyze", str(tmp_path / "a.csv"), str(tmp_path / "b.csv")])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "a.csv: expected" in lines[0] and "also unreadable:" in lines[0]
    assert "b.csv" in lines[0]


@pytest.mark.parametrize(
    "url",
    [
        "gs://bucket/run",
        "s3://b/logs/",
        "http://host/a.csv",
        "https://host/a.csv",
        "hf://user/repo",
        "az://container/run",
    ],
)
def test_remote_url_says_download_first(url: str, clean_csv: Path) -> None:
    r = runner.invoke(app, ["analyze", url])
    assert r.exit_code == 2
    assert (
        r.stderr.strip()
        == f"error: remote paths are not supported; download first: {url.rstrip('/')}"
    )
    import stabdiag

    report = stabdiag.analyze([clean_csv, url])  # the library says the same
    assert report.errors == (f"remote paths are not supported; download first: {url.rstrip('/')}",)


@pytest.mark.parametrize("fmt", ["text", "json", "markdown", "junit", "github"])
def test_output_file_says_where_it_wrote(tmp_path: Path, diverging_csv: Path, fmt: str) -> None:
    """Issue 15 item 7: -o FILE says where the report went (stderr, one line), as --plots does."""
    out = tmp_path / "out" / f"report.{fmt}"
    out.parent.mkdir()
    r = runner.invoke(app, ["analyze", str(diverging_csv), "-f", fmt, "-o", str(out)])
    assert r.exit_code == 1, r.output
    assert r.stdout == "" and out.stat().st_size > 0
    assert r.stderr.splitlines() == [f"wrote the report to {out}"]
    r = runner.invoke(app, ["analyze", str(diverging_csv), "-f", fmt, "-o", "-"])
    assert "wrote the report" not in r.stderr and r.stdout  # - is stdout: nothing to say


def test_compare_output_file_says_where_it_wrote(tmp_path: Path, clean_csv: Path) -> None:
    out = tmp_path / "cmp.json"
    r = runner.invoke(
        app, ["compare", str(clean_csv), "-b", str(clean_csv), "-f", "json", "-o", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert r.stdout == "" and json.loads(out.read_text())
    assert f"wrote the report to {out}" in r.stderr.splitlines()


def test_watch_remote_url_says_download_first(tmp_path: Path) -> None:
    r = runner.invoke(app, ["watch", "s3://bucket/run/", "--idle-timeout", "1"])
    assert r.exit_code == 2
    assert (
        r.stderr.strip() == "error: remote paths are not supported; download first: s3://bucket/run"
    )


def test_directory_of_unreadable_logs_exit_2_counts_them(tmp_path: Path) -> None:
    """Nothing read inside a directory: each bad file is one warning, the last line counts them
    (not 'no training logs found', which the warnings above would contradict)."""
    d = tmp_path / "runs"
    d.mkdir()
    (d / "x.csv").write_text("a,b\n1,2\n")
    (d / "y.csv").write_text("a,b\n3,4\n")
    r = runner.invoke(app, ["analyze", str(d)])
    assert r.exit_code == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["warning", "warning", "error"], r.stderr
    assert lines[-1] == f"error: no run could be read from {d}: 2 unreadable logs (listed above)"


@pytest.mark.parametrize(
    "argv",
    [
        ["verify", "gs://bucket/run"],
        ["verify", "s3://bucket/run", "--proxy"],
        ["branch", "hf://user/run", "--at", "10"],
        ["compare", "https://host/run.csv", "-b", "CLEAN"],
        ["compare", "CLEAN", "-b", "az://container/run"],
    ],
)
def test_single_run_commands_refuse_remote_urls(argv: list[str], clean_csv: Path) -> None:
    argv = [str(clean_csv) if a == "CLEAN" else a for a in argv]
    url = next(a for a in argv if "://" in a)
    r = runner.invoke(app, argv)
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.strip() == f"error: remote paths are not supported; download first: {url}"
