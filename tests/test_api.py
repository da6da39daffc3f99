"""The library facade (issue 16): ``stabdiag.analyze`` gives the CLI's report for the same input,
finds the policy file as the CLI does, takes a DataFrame, and fails with StabdiagError."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import stabdiag
from stabdiag.cli import app
from stabdiag.errors import ConfigError, SourceError
from stabdiag.policy import Policy
from stabdiag.render.json import render_json

runner = CliRunner()

EXPORTS = {
    "analyze",
    "load",
    "load_policy",
    "Report",
    "RunSummary",
    "Finding",
    "Skipped",
    "Remedy",
    "Severity",
    "MetricsTable",
    "StabdiagError",
    "__version__",
}


def spiky_loss(n: int = 800, seed: int = 0) -> np.ndarray:
    """A healthy decaying loss with a 4x spike at steps 500-503, rounded as a CSV stores it."""
    rng = np.random.default_rng(seed)
    s = np.arange(n)
    loss = (2.0 + 3.0 * (1 + s / 30) ** -0.6) * np.exp(rng.normal(0, 0.01, n))
    loss[500:504] *= 4
    return np.array([float(f"{v:.6g}") for v in loss])


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run whose loss column has a name nothing recognises, and a stabdiag.toml beside it whose
    [map] names it; the working directory is the run's, as when a user analyses it in place."""
    d = tmp_path / "run"
    d.mkdir()
    loss = spiky_loss()
    (d / "train.csv").write_text(
        "step,my_tag\n" + "".join(f"{i},{v:.6g}\n" for i, v in enumerate(loss))
    )
    (d / "stabdiag.toml").write_text(
        '[map]\n"train/loss" = "my_tag"\n\n[per-run."other*"]\nfail-on = "never"\n'
    )
    monkeypatch.chdir(d)
    return d


def _cli_json(*args: str) -> tuple[int, dict]:
    r = runner.invoke(app, ["analyze", *args, "--format", "json", "--jobs", "1"])
    return r.exit_code, json.loads(r.stdout)


def test_cli_and_library_give_the_same_report_with_the_policy_map(run_dir: Path) -> None:
    code, cli = _cli_json("train.csv", "--fail-on", "warning")
    report = stabdiag.analyze("train.csv", fail_on="warning")
    assert json.loads(render_json(report)) == cli
    # The [map] of the policy file is what made the spike visible, in both.
    assert [(f.kind, f.step_start, f.step_end) for f in report.findings] == [
        ("loss-spike", 500, 503)
    ]
    assert report.runs[0].judged and report.policy.source.endswith("stabdiag.toml")
    # The CLI exits 1 exactly when the library's report is failing.
    assert code == 1 and [f.code for f in report.failing()] == ["SD101"]
    assert stabdiag.analyze("train.csv").failing() == []  # the default fail-on is error

    without = stabdiag.analyze("train.csv", policy=Policy())  # no file: the tag is not a loss
    assert not without.findings and not without.runs[0].judged


def test_flags_and_keywords_agree(run_dir: Path) -> None:
    _, cli = _cli_json("train.csv", "--ignore", "loss-spike", "--select", "loss-spike,divergence")
    lib = stabdiag.analyze(["train.csv"], select=["loss-spike", "divergence"], ignore="loss-spike")
    assert json.loads(render_json(lib)) == cli
    assert not lib.findings and {s.kind for s in lib.skipped} <= {"divergence"}


def test_a_string_path_is_one_path(run_dir: Path) -> None:
    by_str = stabdiag.analyze(str(run_dir / "train.csv"))
    by_path = stabdiag.analyze(run_dir / "train.csv", cache=False)
    by_list = stabdiag.analyze([run_dir])
    assert by_str == by_path
    assert [r.name for r in by_str.runs] == ["train"] and len(by_list.runs) == 1
    assert by_list.findings == by_str.findings


def test_dataframe_input_finds_what_the_file_shows(run_dir: Path) -> None:
    loss = spiky_loss()
    frame = pd.DataFrame(
        {"run": "train", "step": np.arange(len(loss)), "metric": "my_tag", "value": loss}
    )
    from_frame = stabdiag.analyze(frame)
    from_file = stabdiag.analyze("train.csv")
    assert from_frame.findings == from_file.findings  # same numbers, same policy map, same verdict
    assert from_frame.runs[0].format == "dataframe" and from_frame.runs[0].path == "<DataFrame>"
    assert ("my_tag", "train/loss") in [m[:2] for m in from_frame.runs[0].mapping]
    table = stabdiag.load(frame)
    assert isinstance(table, stabdiag.MetricsTable) and table.metrics() == ["train/loss"]
    assert stabdiag.load("train.csv").metrics() == ["train/loss"]


def test_dataframe_rows_that_are_not_numbers_are_reported(run_dir: Path) -> None:
    loss = spiky_loss().astype(object)
    loss[10] = "oops"
    frame = pd.DataFrame(
        {"run": "r", "step": np.arange(len(loss)), "metric": "train/loss", "value": loss}
    )
    report = stabdiag.analyze(frame, policy=Policy())
    assert "1 row without" in report.runs[0].warnings[0] and report.findings[0].kind == "loss-spike"
    with pytest.raises(
        SourceError, match=r"<DataFrame>: expected a long table with columns run, step"
    ):
        stabdiag.analyze(frame.drop(columns=["metric"]))


def test_errors_are_stabdiag_errors(run_dir: Path) -> None:
    with pytest.raises(stabdiag.StabdiagError, match="unknown kind or code 'loss-spikes'") as e:
        stabdiag.analyze("train.csv", select=["loss-spikes"])
    assert isinstance(e.value, ConfigError) and not isinstance(e.value, KeyError)
    r = runner.invoke(app, ["analyze", "train.csv", "--select", "loss-spikes"])
    assert r.exit_code == 2 and "unknown kind or code 'loss-spikes'" in r.stderr
    with pytest.raises(stabdiag.StabdiagError, match="nothing at that path"):
        stabdiag.analyze("no-such-dir")
    with pytest.raises(stabdiag.StabdiagError, match="expected a log path"):
        stabdiag.analyze(42)  # type: ignore[arg-type]
    with pytest.raises(
        stabdiag.StabdiagError, match="fail_on 'loud': expected one of info, warning, error, never"
    ):
        stabdiag.analyze("train.csv", fail_on="loud")


def test_report_for_notebooks(run_dir: Path) -> None:
    loss = spiky_loss()
    name = "<img src=x onerror=alert(1)>&"
    frame = pd.DataFrame(
        {"run": name, "step": np.arange(len(loss)), "metric": "loss", "value": loss}
    )
    report = stabdiag.analyze(frame, policy=Policy())
    assert report.to_dict()["findings"][0]["severity"] == "warning"
    df = report.to_frame()
    assert list(df.columns[:4]) == ["run", "code", "kind", "severity"]
    assert df.loc[0, "severity"] == "warning" and df.loc[0, "step_start"] == 500 and len(df) == 1
    assert (
        stabdiag.analyze("train.csv", policy=Policy()).to_frame().empty
    )  # no findings, same columns
    html = report._repr_html_()
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;&amp;" in html
    assert ">warning<" in html and "SD101 loss-spike at steps 500" in html
    f = report.findings[0]
    assert str(f.severity) == "warning" and f"{f.severity:>8}" == " warning"
    assert f.severity > stabdiag.Severity.INFO  # still ordered


def test_exports_and_a_light_import() -> None:
    assert set(stabdiag.__all__) == EXPORTS
    for name in EXPORTS:
        assert getattr(stabdiag, name) is not None
    code = (
        "import sys, stabdiag; heavy = {'pandas', 'numpy', 'torch'} & set(sys.modules); "
        "assert not heavy, heavy; assert not hasattr(stabdiag, 'Monitor'); print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.stdout.strip() == "ok", out.stderr


def test_the_readme_notebook_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    block = re.search(r"### From Python \(a notebook\)\n\n```python\n(.*?)```", readme, re.S)
    assert block is not None, "the README's notebook example is gone"
    lines = block.group(1).splitlines()
    assert len(lines) == 5
    monkeypatch.chdir(root)
    ns: dict = {}
    values = []
    for line in lines:
        code = line.split("  #")[0].strip()
        try:
            values.append(eval(compile(code, "<readme>", "eval"), ns))  # noqa: S307 - our own README
        except SyntaxError:
            exec(code, ns)  # noqa: S102
    report, errors, failing = values[-3], values[-2], values[-1]
    assert "<table>" in report._repr_html_()
    assert (
        list(errors.columns) == ["run", "kind", "step_start", "step_end"]
        and len(errors) == failing > 0
    )


def test_compare_judges_both_runs_under_the_policy_file(run_dir: Path) -> None:
    loss = spiky_loss()
    loss[500:504] /= 4  # the baseline: the same run without the spike
    (run_dir / "base.csv").write_text(
        "step,my_tag\n" + "".join(f"{i},{v:.6g}\n" for i, v in enumerate(loss))
    )
    r = runner.invoke(app, ["compare", "train.csv", "--baseline", "base.csv", "--format", "json"])
    assert r.exit_code == 1, r.output  # the [map] found the loss in both; the spike is new
    doc = json.loads(r.stdout)
    assert doc["worse"] and any(c["name"] == "spikes" and c["worse"] for c in doc["checks"])
    (run_dir / "stabdiag.toml").unlink()
    r = runner.invoke(app, ["compare", "train.csv", "--baseline", "base.csv", "--format", "json"])
    assert r.exit_code == 2 and "no train/loss series" in r.stderr


# --- every command goes through the facade (issue 16 item 1) -----------------------------------


def test_series_lists_what_the_library_reads_under_the_policy_map(run_dir: Path) -> None:
    from stabdiag.api import load_runs

    loaded = load_runs("train.csv")
    (info,) = loaded.runs
    assert [m[:2] for m in info.mapping] == [("my_tag", "train/loss")]  # the policy file's [map]
    r = runner.invoke(app, ["series", "train.csv"])
    assert r.exit_code == 0, r.output
    row = next(ln for ln in r.stdout.splitlines() if ln.strip().startswith("my_tag"))
    assert row.split()[:4] == ["my_tag", "train/loss", "800", "0-799"]
    assert stabdiag.load("train.csv").metrics() == ["train/loss"] == loaded.table.metrics()


def test_plot_draws_the_runs_of_the_library_report(run_dir: Path) -> None:
    from stabdiag.render.plots import plot_files

    r = runner.invoke(app, ["plot", "train.csv", "--out", "figs", "--image-format", "svg"])
    assert r.exit_code == 0, r.output
    stems = plot_files(stabdiag.analyze("train.csv"))
    assert sorted(p.name for p in Path("figs").iterdir()) == sorted(
        f"{s}.svg" for s in stems.values()
    )


def test_compare_cli_prints_the_library_comparison(run_dir: Path) -> None:
    from stabdiag.compare import Thresholds, compare_reports
    from stabdiag.render import render

    loss = spiky_loss()
    loss[500:504] /= 4
    (run_dir / "base.csv").write_text(
        "step,my_tag\n" + "".join(f"{i},{v:.6g}\n" for i, v in enumerate(loss))
    )
    for fmt in ("text", "json"):
        r = runner.invoke(app, ["compare", "train.csv", "-b", "base.csv", "-f", fmt])
        assert r.exit_code == 1, r.output
        lib = compare_reports(
            stabdiag.analyze("train.csv"), stabdiag.analyze("base.csv"), Thresholds()
        )
        assert r.stdout == render(lib, fmt)
    r = runner.invoke(app, ["compare", "train.csv", "-b", "base.csv", "-f", "markdown"])
    assert r.exit_code == 2 and "--format 'markdown': expected one of text, json" in r.stderr


def _fake_training(loss: np.ndarray):
    """A stand-in for stabdiag.train.train that writes a finished run's metrics.csv (no torch)."""
    from types import SimpleNamespace

    def train(cfg, progress=None, **_):  # noqa: ANN001, ANN202
        d = Path(cfg.out_dir) / cfg.run_name
        d.mkdir(parents=True, exist_ok=True)
        (d / "metrics.csv").write_text(
            "step,my_tag\n" + "".join(f"{i},{v:.6g}\n" for i, v in enumerate(loss))
        )
        return SimpleNamespace(
            interrupted=False,
            run_dir=d,
            steps_done=len(loss),
            stop_reason="completed",
            final_val_loss=float("nan"),
        )

    return train


def test_a_sweep_cell_is_judged_by_the_facade_under_the_policy_file(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stabdiag.train
    from stabdiag.sweep.results import finding_kinds
    from stabdiag.sweep.runner import train_cell
    from stabdiag.sweep.spec import Cell
    from stabdiag.train.config import resolve

    monkeypatch.setattr(stabdiag.train, "train", _fake_training(spiky_loss()), raising=False)
    cfg = resolve("tiny", "stable", None, [f"out_dir={run_dir / 'sweep'}", "run_name=cell"])
    result = train_cell(Cell(setting="baseline", lr=1e-3, config=cfg), save=False)
    assert result is not None
    expected = finding_kinds(stabdiag.analyze(run_dir / "sweep" / "cell"))
    assert result.findings == expected and ("loss-spike", "warning") in expected  # [map] applied


def test_verify_proxy_judges_runs_through_the_facade(run_dir: Path) -> None:
    from stabdiag.verify_proxy import _hit

    assert _hit(run_dir, ("loss-spike",))[0]  # the policy file's [map] names the loss
    (run_dir / "stabdiag.toml").unlink()
    assert not _hit(run_dir, ("loss-spike",))[0]  # without it no loss, so no spike


def test_train_analyze_prints_the_library_report(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")  # the command checks for it before training
    import stabdiag.train
    from stabdiag.render import RenderOptions, render

    fake = _fake_training(spiky_loss())

    def train(cfg, **kw):  # noqa: ANN001, ANN003, ANN202 - the loop's result, as far as the CLI reads it
        res = fake(cfg)
        return SimpleNamespace(
            **vars(res),
            is_main=True,
            note="",
            final_loss=1.0,
            guard=None,
            injected=[],
            stop_signal=None,
            checkpoint=None,
            exit_code=0,
        )

    from types import SimpleNamespace

    monkeypatch.setattr(stabdiag.train, "train", train, raising=False)
    r = runner.invoke(app, ["train", "--out", "runs", "--name", "t", "--fail-on", "warning"])
    assert r.exit_code == 1, r.output  # the policy file's [map] found the spike, as analyze does
    report = stabdiag.analyze(Path("runs") / "t")  # the path the command was given
    assert "loss-spike" in r.stdout and r.stdout == render(report, "text", RenderOptions(width=120))


def _tb_run(d: Path, loss: np.ndarray) -> None:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    d.mkdir(parents=True)
    w = EventFileWriter(str(d))
    for i, v in enumerate(loss):
        value = summary_pb2.Summary.Value(tag="train/loss", simple_value=float(v))
        w.add_event(
            event_pb2.Event(wall_time=1.0 + i, step=i, summary=summary_pb2.Summary(value=[value]))
        )
    w.close()


def test_cache_false_is_a_parameter_not_an_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from stabdiag.sources import cache

    monkeypatch.setenv("STABDIAG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("STABDIAG_NO_CACHE", raising=False)
    monkeypatch.setattr(cache, "MIN_BYTES", 0)
    _tb_run(tmp_path / "tb", spiky_loss())
    seen: list[str | None] = []
    real = cache.read_event_file

    def spy(*a, **k):  # noqa: ANN002, ANN003, ANN202
        seen.append(os.environ.get("STABDIAG_NO_CACHE"))
        return real(*a, **k)

    monkeypatch.setattr(cache, "read_event_file", spy)
    fresh = stabdiag.analyze(tmp_path / "tb", policy=Policy(), cache=False)
    assert seen == [] and not (tmp_path / "cache").exists()  # never read, never written
    cached = stabdiag.analyze(tmp_path / "tb", policy=Policy())
    assert seen == [None] and (tmp_path / "cache").exists()
    assert fresh.findings == cached.findings and fresh.findings[0].kind == "loss-spike"
    assert "STABDIAG_NO_CACHE" not in os.environ
