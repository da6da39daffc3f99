"""Issue 13: analysis and report defects (C7-C9, D5, D6, L1, L6, L7, cosmetics), inputs built here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from stabdiag.diagnose import diagnose


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


def _spiky_csv(path: Path, extra: str = "", cell=lambda i: "") -> Path:
    rows = [f"{i},{8.0 if i == 150 else 2.0 - i / 400}{cell(i)}" for i in range(300)]
    path.write_text(f"step,loss{extra}\n" + "\n".join(rows) + "\n")
    return path


# --------------------------------------------------------------------------- C7


def test_c7_a_crashing_detector_becomes_its_skipped_entry(tmp_path):
    # fp16-overflow's log2(ref/min) overflows on a loss scale of 5e-324 (a denormal).
    f = _spiky_csv(
        tmp_path / "run.csv", ",loss_scale", lambda i: f",{5e-324 if i > 100 else 65536.0}"
    )
    report = diagnose([f], jobs=1)
    errs = [s for s in report.skipped if "detector error" in s.reason]
    assert [s.kind for s in errs] == ["fp16-overflow"]
    assert any(f.kind == "loss-spike" for f in report.findings)  # the rest of the report stands
    r = _cli("analyze", str(f), "-f", "json", "--fail-on", "never")
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert any("detector error" in s["reason"] for s in json.loads(r.stdout)["skipped"])


# --------------------------------------------------------------------------- D6


def test_d6_a_countdown_is_one_restart_episode(tmp_path):
    import time

    from adversarial import csv_countdown

    f = csv_countdown(tmp_path, n=50_000)
    t0 = time.perf_counter()
    report = diagnose([f], jobs=1)
    assert time.perf_counter() - t0 < 20
    assert [x.kind for x in report.findings if x.kind == "restart"] == ["restart"]
    assert sum("restart" in w for w in report.runs[0].warnings) == 1


def test_d6_separate_resumes_stay_separate(tmp_path):
    # 0..99, resume at 90 -> 149, resume at 140 -> 199: two episodes (the run got past 99).
    steps = [*range(100), *range(90, 150), *range(140, 200)]
    f = tmp_path / "r.csv"
    f.write_text("step,loss\n" + "".join(f"{s},{2 - s / 400}\n" for s in steps))
    report = diagnose([f], jobs=1)
    assert len([x for x in report.findings if x.kind == "restart"]) == 2


def test_d6_episodes_are_capped(tmp_path):
    from stabdiag.sources import restarts

    # many genuine resumes, each after getting past the last high-water mark
    steps = []
    for k in range(200):
        steps += [10 * k + 5, 10 * k + 6, 10 * k + 20]
    f = tmp_path / "many.csv"
    f.write_text("step,loss\n" + "".join(f"{s},1\n" for s in steps))
    report = diagnose([f], jobs=1)
    assert len([x for x in report.findings if x.kind == "restart"]) == restarts.MAX_EPISODES


# --------------------------------------------------------------------------- D5


def _many_runs_report(tmp_path, n_runs: int):
    """A real one-run report replicated into ``n_runs`` runs (findings, skips, remedies too)."""
    import dataclasses

    report = diagnose([_spiky_csv(tmp_path / "base.csv")], jobs=1)
    runs, findings, skipped, remedies = [], [], [], []
    for i in range(n_runs):
        name = f"run{i:05d}"
        runs += [dataclasses.replace(r, name=name) for r in report.runs]
        findings += [dataclasses.replace(f, run=name) for f in report.findings]
        skipped += [dataclasses.replace(s, run=name) for s in report.skipped]
        remedies += [dataclasses.replace(r, run=name) for r in report.remedies]
    return dataclasses.replace(
        report,
        runs=tuple(runs),
        findings=tuple(findings),
        skipped=tuple(skipped),
        remedies=tuple(remedies),
    )


def test_d5_reports_are_linear_in_the_number_of_runs(tmp_path):
    import time

    from stabdiag.render.github import render_github
    from stabdiag.render.html import render_html
    from stabdiag.render.junit import render_junit
    from stabdiag.render.markdown import render_markdown

    big = _many_runs_report(tmp_path, 3000)
    assert len(big.runs) == 3000 and len(big.findings) >= 3000
    for render in (
        render_markdown,
        render_github,
        render_junit,
        lambda r: render_html(r, plots=False),
    ):
        t0 = time.perf_counter()
        out = render(big)
        took = time.perf_counter() - t0
        assert took < 15, f"{render}: {took:.1f}s for 3000 runs"  # quadratic took minutes
        assert "run02999" in out
