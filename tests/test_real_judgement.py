"""Issue 12 on the real logs (skipped when ../shared/real_logs is absent): the hand labels of
benchmarks/real_labels.py hold, no folder gets an error-severity false alarm, and the named misses
of the issue are found."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from stabdiag.cli import app
from stabdiag.diagnose import diagnose
from stabdiag.findings import Severity

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import score_real  # noqa: E402


def test_every_real_folder_meets_its_labels(real_logs: Path) -> None:
    scores, summary = score_real.score_all(real_logs)
    assert summary["error_false_alarms"] == 0, [s.error_false_alarms for s in scores]
    assert summary["found"] >= summary["labels"] - 1, [s.missed for s in scores if s.missed]
    assert summary["fa_per_10k"] <= 0.1, [s.false_alarms for s in scores if s.false_alarms]


def test_runaway_to_700_is_an_error_that_names_the_lr_decay(real_logs: Path) -> None:
    rep = diagnose([real_logs / "cs336_tinystories_lr1"], jobs=1)
    (f,) = [f for f in rep.findings if f.kind == "divergence"]
    assert f.severity == Severity.ERROR and f.step_start <= 210
    assert "703" in f.message and "LR had decayed to" in f.message


def test_mid_run_rise_of_the_lr_0_1_cell_is_a_warning_from_its_onset(real_logs: Path) -> None:
    rep = diagnose([real_logs / "cs336_tinystories_lr1e-1"], jobs=1)
    (f,) = [f for f in rep.findings if f.kind == "divergence"]
    assert f.severity == Severity.WARNING and 100 <= f.step_start <= 250


def test_mean_loss_nan_is_found_and_the_choice_is_said(real_logs: Path) -> None:
    rep = diagnose([real_logs / "lightning_pinn"], jobs=1)
    (run,) = rep.runs
    assert run.judged and run.loss["series"] == "mean_loss"
    (f,) = [f for f in rep.findings if f.kind == "nonfinite"]
    assert f.severity == Severity.ERROR and f.step_start == 218


def test_val_only_run_is_judged(real_logs: Path) -> None:
    rep = diagnose([real_logs / "mng_mtp_val_every10"], jobs=1)
    (run,) = rep.runs
    assert run.judged and run.loss["metric"] == "val/loss"
    assert not rep.at_or_above(Severity.WARNING)


def test_json_marks_judged_runs(real_logs: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    res = CliRunner().invoke(
        app,
        ["analyze", str(real_logs / "lightning_pinn"), "--format", "json", "--fail-on", "never"],
    )
    assert res.exit_code == 0, res.output
    (run,) = json.loads(res.stdout)["runs"]
    assert run["judged"] is True and "mean_loss" in run["judged_reason"]


def test_unjudged_run_has_no_tick_and_json_says_why(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    (tmp_path / "a.csv").write_text(
        "step,accuracy\n" + "".join(f"{i},{i / 100}\n" for i in range(50))
    )
    (tmp_path / "b.csv").write_text(
        "step,loss\n" + "".join(f"{i},{5 - i / 100}\n" for i in range(50))
    )
    r = CliRunner().invoke(
        app, ["analyze", str(tmp_path), "--format", "json", "--fail-on", "never"]
    )
    runs = {x["name"]: x for x in json.loads(r.stdout)["runs"]}
    assert runs["a"]["judged"] is False and "no loss series" in runs["a"]["judged_reason"]
    assert runs["b"]["judged"] is True
    t = CliRunner().invoke(app, ["analyze", str(tmp_path / "a.csv"), "--fail-on", "never"])
    assert t.exit_code == 2  # nothing at all could be judged
    both = CliRunner().invoke(app, ["analyze", str(tmp_path), "--fail-on", "never"])
    line = next(
        ln
        for ln in both.stdout.splitlines()
        if ln.lstrip().startswith(("✔", "?")) and " a " in ln + " "
    )
    assert line.lstrip().startswith("?")


@pytest.mark.parametrize("folder", ["dschat_sft_opt13b", "dschat_rlhf_ppo"])
def test_deepspeed_sawtooth_and_probing_are_not_warnings(real_logs: Path, folder: str) -> None:
    rep = diagnose([real_logs / folder], jobs=1)
    fp = [f for f in rep.findings if f.kind == "fp16-overflow"]
    assert fp and all(f.severity == Severity.INFO for f in fp), [f.message for f in fp]
