"""Issue 13: analysis and report defects (C7-C9, D5, D6, L1, L6, L7, cosmetics), inputs built here."""

from __future__ import annotations

import json
import os
import re
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

    from adversarial_util import csv_countdown

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


# --------------------------------------------------------------------------- C8, C9, L1


def test_c8_a_huge_logit_does_not_break_html_or_plots(tmp_path):
    f = tmp_path / "run.csv"
    f.write_text(
        "step,loss,max_attn_logit\n"
        + "".join(f"{i},{2 - i / 300},{1e308 if i == 200 else 5 + i / 100}\n" for i in range(300))
    )
    r = _cli(
        "analyze",
        str(f),
        "-f",
        "html",
        "-o",
        str(tmp_path / "r.html"),
        "--plots",
        str(tmp_path / "plots"),
        "--fail-on",
        "never",
    )
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "RuntimeWarning" not in r.stderr
    assert (tmp_path / "plots" / "run.png").stat().st_size > 1000
    r = _cli("plot", str(f), "-o", str(tmp_path / "p2"))
    assert r.returncode == 0 and (tmp_path / "p2" / "run.svg").is_file(), r.stderr


def test_c9_non_utf8_names_have_one_escaped_form_in_every_output(tmp_path):
    d = os.fsdecode(os.path.join(os.fsencode(str(tmp_path)), b"in\xfedir"))
    os.makedirs(d)
    Path(d, os.fsdecode(b"r\xff.csv")).write_text(
        "step,loss\n" + "".join(f"{i},{8 if i == 150 else 2 - i / 300}\n" for i in range(300))
    )
    plots = os.fsdecode(os.path.join(os.fsencode(str(tmp_path)), b"pl\xff"))
    for fmt in ("text", "json", "markdown", "html", "junit", "github"):
        out = tmp_path / f"out.{fmt}"
        extra = ["--plots", plots] if fmt == "markdown" else []  # plots are slow to draw
        r = _cli("analyze", d, "-f", fmt, "-o", str(out), *extra, "--fail-on", "never")
        assert r.returncode == 0, (fmt, r.stderr)
        text = out.read_bytes().decode("utf-8")  # valid UTF-8, no lone surrogates
        # the one escaped form (Markdown and JSON add their own backslash escaping on top)
        assert re.search(r"r\\+xff", text), fmt
    import xml.dom.minidom

    xml.dom.minidom.parse(str(tmp_path / "out.junit"))
    assert json.loads((tmp_path / "out.json").read_text())["runs"][0]["path"].endswith("r\\xff.csv")
    assert "pl%FF/" in (tmp_path / "out.markdown").read_text()


def test_l1_compare_never_overwrites_its_inputs(tmp_path):
    a = _spiky_csv(tmp_path / "a.csv")
    b = _spiky_csv(tmp_path / "b.csv")
    before = a.read_bytes()
    for target in (a, b):
        r = _cli("compare", str(a), "-b", str(b), "-o", str(target))
        assert r.returncode == 2 and "refusing to overwrite" in r.stderr
    assert a.read_bytes() == before


def test_numpy_warnings_do_not_reach_stderr(tmp_path):
    f = tmp_path / "nan_tail.csv"
    f.write_text(
        "step,loss,grad_norm\n"
        + "".join(
            f"{i},{'nan' if i > 120 else 2 - i / 300},{'nan' if i > 100 else 1e308}\n"
            for i in range(200)
        )
    )
    r = _cli("analyze", str(f), "--fail-on", "never")
    assert r.returncode == 0 and "Warning" not in r.stderr, r.stderr
