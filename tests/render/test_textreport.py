"""The human text reports read well: hanging indents, the true "not checked" reasons, plurals.

Issue 15 items 1, 4 and 10. Reports are built by hand (no readers, no detectors), rendered on
consoles of a fixed width, on a terminal (ANSI colour) and off one (plain text).
"""

from __future__ import annotations

import re

import pytest
from render_util import make_report
from rich.console import Console
from typer.testing import CliRunner

from stabdiag.findings import Finding, Severity, Skipped
from stabdiag.remedies import Remedy
from stabdiag.render.markdown import render_markdown
from stabdiag.render.notchecked import NOT_LOGGED, group, reason_for
from stabdiag.render.terminal import render_terminal
from stabdiag.report import Report, RunSummary
from stabdiag.words import count, plain, plural, tally

ANSI = re.compile(r"\x1b\[[0-9;]*m")
LONG = (
    "the loss jumped 3.4x to 8.08 at step 150 from a baseline of 2.37, the median of the previous "
    "five log points, and recovered in one step"
)


def _skip(kind: str, reason: str, run: str = "a") -> Skipped:
    return Skipped(code="SD000", kind=kind, run=run, reason=reason)


def _report(
    n_remedies: int = 2, runs: tuple[str, ...] = ("a",), warn: int = 1, err: int = 1
) -> Report:
    findings = [
        Finding(
            code="SD101",
            kind="loss-spike",
            severity=Severity.WARNING,
            run=r,
            metric="train/loss",
            step_start=150,
            step_end=150,
            message=LONG,
            evidence={},
        )
        for r in runs
        for _ in range(warn)
    ]
    findings += [
        Finding(
            code="SD104",
            kind="nonfinite",
            severity=Severity.ERROR,
            run=r,
            metric="train/loss",
            step_start=30,
            step_end=49,
            message="training loss was non-finite",
            evidence={},
        )
        for r in runs
        for _ in range(err)
    ]
    remedies = tuple(
        Remedy(
            id=f"r{i}",
            kind="loss-spike",
            run=r,
            rank=i + 1,
            title=f"Remedy number {i + 1} for the spike",
            actions=(
                "inspect the batch(es) at step 150: empty sequences, all-masked labels, out-of-range "
                "token ids, a duplicated or corrupt document",
            ),
            why="",
            references=(),
            addresses=("loss-spike@150",),
            watch="the share of clipped steps: a few percent is right; most steps clipped means the LR is "
            "too high",
        )
        for r in runs
        for i in range(n_remedies)
    )
    summaries = tuple(
        RunSummary(
            name=r,
            path=f"logs/{r}.csv",
            format="csv",
            steps=(0, 299),
            metrics=("train/loss",),
            warnings=(
                "logs/a.csv: the job did not end cleanly (line 31: Traceback (most recent call "
                "last):); metrics up to that point were read",
            ),
        )
        for r in runs
    )
    skipped = tuple(
        s
        for r in runs
        for s in (
            _skip("grad-spike", "no train/grad_norm series", r),
            _skip(
                "fp16-overflow",
                "no train/loss_scale or train/skipped_step series (not an fp16 run, or not logged)",
                r,
            ),
            _skip("stall", "train/loss has too few finite points (30 needed)", r),
            _skip("divergence", "train/loss has too few finite points (30 needed)", r),
            _skip(
                "rank-divergence", "fewer than 2 ranks logged for train/loss or train/grad_norm", r
            ),
        )
    )
    return Report(
        runs=summaries,
        findings=tuple(findings),
        skipped=skipped,
        remedies=remedies,
        errors=(
            "logs/broken.csv: expected CSV with a header row, found binary data and nothing else "
            "that could be read",
        ),
        version="9.9.9",
    )


def _text(report: Report, width: int, tty: bool, **kw: object) -> list[str]:
    con = Console(
        width=width, force_terminal=tty, color_system="standard" if tty else None, record=True
    )
    con.print(render_terminal(report, **kw))
    return [ANSI.sub("", line) for line in con.export_text(styles=False).splitlines()]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


# --- item 1: hanging indents ---------------------------------------------------------------------


@pytest.mark.parametrize("tty", [True, False], ids=["tty", "pipe"])
@pytest.mark.parametrize("width", [60, 80, 120])
def test_wrapped_lines_keep_their_indent(width: int, tty: bool) -> None:
    lines = _text(_report(), width, tty)
    assert all(len(line) <= width for line in lines)
    assert all(line == line.rstrip() for line in lines), "no trailing blanks"
    # Only the header and the run lines start at column 0; nothing wraps back there.
    assert [line for line in lines if line and _indent(line) == 0] == [
        lines[0],
        next(line for line in lines if line.startswith("✘ a")),
    ]
    if width > 80:
        return  # nothing below wraps at 120 columns
    # A remedy's action continues under its first word ("inspect"), the watch text under its own.
    i = next(i for i, line in enumerate(lines) if line.lstrip().startswith("- inspect"))
    assert _indent(lines[i + 1]) == lines[i].index("inspect")
    j = next(i for i, line in enumerate(lines) if line.lstrip().startswith("watch: "))
    assert _indent(lines[j + 1]) == lines[j].index("the share")
    k = next(i for i, line in enumerate(lines) if line.startswith("  input: "))
    assert _indent(lines[k + 1]) == len("  input: ")


def test_same_words_on_and_off_a_terminal() -> None:
    assert _text(_report(), 80, True) == _text(_report(), 80, False)


def test_narrow_width_stacks_findings_instead_of_a_ribbon_column() -> None:
    lines = _text(_report(), 60, False)
    head = next(i for i, line in enumerate(lines) if line.strip().startswith("warning  loss-spike"))
    assert lines[head].strip() == "warning  loss-spike  step 150"
    assert lines[head + 1].startswith("    the loss jumped 3.4x") and len(lines[head + 1]) > 50
    wide = _text(_report(), 120, False)
    assert any(line.split() == ["severity", "kind", "steps", "finding"] for line in wide)


# --- item 4: the true reason per detector --------------------------------------------------------


def test_not_checked_gives_the_true_reason_grouped() -> None:
    lines = [" ".join(line.split()) for line in _text(_report(), 200, False)]
    nc = [line for line in lines if line.startswith("not checked:")]
    assert nc == [
        f"not checked: grad-spike, fp16-overflow \N{EM DASH} {NOT_LOGGED}",
        "not checked: stall, divergence \N{EM DASH} train/loss has too few finite points (30 needed)",
        "not checked: rank-divergence \N{EM DASH} fewer than 2 ranks logged for train/loss or train/grad_norm",
    ]


@pytest.mark.parametrize(
    ("reason", "logged", "said"),
    [
        ("no train/max_attn_logit series with 20 finite points", (), NOT_LOGGED),
        (
            "no train/max_attn_logit series with 20 finite points",
            ("train/max_attn_logit",),
            "train/max_attn_logit has too few finite points (20 needed)",
        ),
        ("no train/loss or val/loss series", ("train/grad_norm",), NOT_LOGGED),
        (
            "no critic series (critic-free method such as GRPO/RLOO, or not logged)",
            ("rl/loss",),
            NOT_LOGGED,
        ),
        ("not a preference (DPO) run", (), "not a preference (DPO) run"),
        (
            "detector error on this run's data (ValueError: x)",
            (),
            "detector error on this run's data (ValueError: x)",
        ),
    ],
)
def test_reason_for(reason: str, logged: tuple[str, ...], said: str) -> None:
    assert reason_for(_skip("k", reason), logged) == said


def test_group_keeps_detector_order_and_each_kind_once() -> None:
    g = group(
        [
            _skip("x", "no a/b series"),
            _skip("y", "odd"),
            _skip("z", "no c/d series"),
            _skip("x", "no a/b series"),
        ],
        (),
    )
    assert [(n.reason, n.kinds) for n in g] == [(NOT_LOGGED, ("x", "z")), ("odd", ("y",))]


def test_markdown_not_checked_groups_by_true_reason() -> None:
    text = render_markdown(_report())
    assert "<summary>Not checked (5)</summary>" in text
    assert f"- grad-spike, fp16-overflow: {NOT_LOGGED}" in text
    assert "- stall, divergence: train/loss has too few finite points (30 needed)" in text


# --- item 10: grammar and polish ----------------------------------------------------------------


def test_plural_helpers() -> None:
    assert [count(n, "run") for n in (0, 1, 2)] == ["0 runs", "1 run", "2 runs"]
    assert (
        count(3, "info") == "3 info"
        and count(2, "entry") == "2 entries"
        and plural("metric", 1) == "metric"
    )
    assert tally({"error": 1, "warning": 8, "info": 2}) == "1 error, 8 warnings, 2 info"
    assert tally({"error": 0, "warning": 1}) == "1 warning"
    assert tally({}) == "no findings"


def test_header_and_run_line_agree_in_number() -> None:
    lines = _text(_report(warn=8, err=1), 200, False)
    assert lines[0] == "stabdiag 9.9.9 · 1 run · 1 error, 8 warnings"
    assert lines[3] == "✘ a  csv, steps 0-299, 1 metric  1 error, 8 warnings"
    two = _text(_report(runs=("b", "a")), 200, False)
    assert two[0] == "stabdiag 9.9.9 · 2 runs, listed by path · 2 errors, 2 warnings"
    md = render_markdown(_report(runs=("b", "a")))
    assert md.startswith("## stabdiag: 2 runs, listed by path · 2 errors, 2 warnings\n")


def test_runs_are_listed_by_path() -> None:
    lines = _text(_report(runs=("b", "c", "a")), 200, False)
    assert [line.split()[1] for line in lines[1:] if line and line[0] in "✘!✔?·"] == ["a", "b", "c"]
    md = render_markdown(_report(runs=("b", "c", "a")))
    assert [m for m in re.findall(r"^### \S+ (\w)$", md, re.M)] == ["a", "b", "c"]


def test_cut_remedies_name_the_option() -> None:
    lines = _text(_report(n_remedies=13), 120, False)
    assert "  (+8 more: --max-remedies)" in lines
    assert "  (+1 more: --max-remedies)" in _text(_report(n_remedies=6), 120, False)
    assert not any("more:" in line for line in _text(_report(n_remedies=5), 120, False))


def test_no_doubled_parentheses_in_the_report_lines() -> None:
    # The renderer's own wording never wraps a parenthesis around text that has its own.
    lines = _text(make_report(nasty=False), 200, False)
    own = [
        line for line in lines if "not checked" in line or "more:" in line or "test a fix" in line
    ]
    assert own and not any(re.search(r"\([^()]*\(", line) for line in own)


def test_verify_hint_is_a_command_to_copy() -> None:
    lines = _text(_report(), 120, False)
    i = lines.index("  test a fix before paying for it (a small model with this run's settings):")
    assert lines[i + 1] == "    stabdiag verify logs/a.csv --proxy"


def test_explain_prints_no_rst_markup() -> None:
    assert (
        plain("set ``clip`` (see :func:`~stabdiag.x.f` and :class:`Config`)")
        == "set `clip` (see `stabdiag.x.f` and `Config`)"
    )
    from stabdiag.cli import app

    res = CliRunner().invoke(app, ["explain", "loss-spike"], env={"COLUMNS": "100"})
    assert res.exit_code == 0, res.output
    assert "``" not in res.output and "z_threshold" in res.output


def test_ci_formats_say_where_and_why_plainly() -> None:
    from stabdiag.render.github import render_github
    from stabdiag.render.junit import render_junit

    whole = Finding(
        code="SD107",
        kind="stall",
        severity=Severity.ERROR,
        run="a",
        metric="train/loss",
        step_start=None,
        step_end=None,
        message="loss flat",
        evidence={},
    )
    base = _report()
    rep = Report(runs=base.runs, findings=(whole,), skipped=(), remedies=(), version="9.9.9")
    xml = render_junit(rep)
    assert 'message="error: loss flat"' in xml and "at run" not in xml
    unjudged = RunSummary(
        name="b",
        path="logs/b.csv",
        format="csv",
        steps=(0, 9),
        metrics=("train/lr",),
        judged=False,
        judged_reason="not judged: no loss series found; name one with --map",
    )
    gh = render_github(
        Report(runs=(unjudged,), findings=(), skipped=(), remedies=(), version="9.9.9")
    )
    assert gh == (
        "::warning title=stabdiag not judged (b)::b (logs/b.csv): not judged: no loss series found; "
        "name one with --map\n"
    )


def test_styles_survive_the_wrapping_on_a_terminal() -> None:
    from stabdiag.console import THEME

    con = Console(width=60, force_terminal=True, color_system="standard", theme=THEME, record=True)
    con.print(render_terminal(_report()))
    lines = con.export_text(styles=True).splitlines()
    run = next(line for line in lines if "✘" in line)
    assert (
        run.startswith("\x1b[1;31m✘") and "\x1b[1ma\x1b[0m" in run
    )  # red mark, bold (not red) name
    checked = [
        line for line in lines if "not checked" in line or line.startswith("               ")
    ]
    assert checked and all("\x1b[2m" in line for line in checked)  # dim, continuation lines too
    assert any(line.startswith("  \x1b[33mwarning") for line in lines)
