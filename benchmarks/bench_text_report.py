"""Benchmark: how long the text and Markdown reports take to render, apart from the analysis.

Usage:
    python benchmarks/bench_text_report.py [--runs 500] [--repeats 3] [--real]
    python benchmarks/bench_text_report.py --clean 10000 [--repeats 3]

Builds a report of ``--runs`` runs by hand (5 findings, 3 skipped checks and 3 remedies each,
messages of real length) and prints the median time to print it as text at 80 and 120 columns
(as the CLI does, ``render_text``; "rich 80": through rich alone, ``render_terminal``) and to
render it as Markdown, in total and per run. ``--real`` also analyses every folder of
../shared/real_logs once and times rendering that report. The text report lays out every
wrapped line itself (render/terminal.py ``_Hang``) instead of a rich Table per line or per run:
measure here before changing that.

``--clean N`` times what a walk of many small healthy logs prints (issue 13 R4): N runs of a
run line and three "not checked" lines each, as ``stabdiag analyze`` renders them (the
renderer registry, ``render_text``) and as rich alone prints them (``text_of`` of
``render_terminal``, the slow path), at 60, 80 and 120 columns, off a terminal and on one
(ANSI), in CPU seconds; it checks that both give the same bytes. Goal: 10,000 runs <= 1 s.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

from rich.console import Console

from stabdiag.console import THEME
from stabdiag.findings import Finding, Severity, Skipped
from stabdiag.remedies import Remedy
from stabdiag.render import RenderOptions, render, text_of
from stabdiag.render.markdown import render_markdown
from stabdiag.render.terminal import render_terminal
from stabdiag.report import Report, RunSummary
from stabdiag.runconfig import RunConfig

MESSAGE = (
    "loss jumped 3.4x to 8.08 at step 150 from a baseline of 2.37 (median of the previous 5 log "
    "points, computed; the last value before it was 2.11 at step 149); recovered in 1 step."
)
SKIPS = (
    ("fp16-overflow", "no train/loss_scale or train/skipped_step series"),
    ("attention-logit-growth", "no train/max_attn_logit series with 20 finite points"),
    ("rank-divergence", "fewer than 2 ranks logged for train/loss or train/grad_norm"),
)


def synthetic(n: int) -> Report:
    names = [f"run-{i:04d}" for i in range(n)]
    runs = tuple(
        RunSummary(
            name=r,
            path=f"logs/{r}/metrics.jsonl",
            format="jsonl",
            steps=(0, 9999),
            metrics=("train/grad_norm", "train/loss", "train/lr"),
        )
        for r in names
    )
    findings = tuple(
        Finding(
            code="SD101",
            kind="loss-spike",
            severity=Severity.WARNING,
            run=r,
            metric="train/loss",
            step_start=100 * j,
            step_end=100 * j + 3,
            message=MESSAGE,
            evidence={},
        )
        for r in names
        for j in range(5)
    )
    skipped = tuple(
        Skipped(code="SD000", kind=k, run=r, reason=why) for r in names for k, why in SKIPS
    )
    remedies = tuple(
        Remedy(
            id=f"r{j}",
            kind="loss-spike",
            run=r,
            rank=j + 1,
            title="Clip the global gradient norm",
            actions=(
                "clip the global grad norm at 2.45 (p99 of this run's grad norms before step "
                "150; 1.0 is the usual default)",
            ),
            why="",
            references=(),
            addresses=("loss-spike@100",),
            watch="the share of clipped steps: a few percent is right; most steps clipped "
            "means the LR is too high",
        )
        for r in names
        for j in range(3)
    )
    return Report(runs=runs, findings=findings, skipped=skipped, remedies=remedies, version="bench")


CLEAN_SKIPS = (
    ("divergence", "train/loss has too few finite points (30 needed)"),
    ("stall", "train/loss has too few finite points (30 needed)"),
    ("fp16-overflow", "no train/loss_scale or train/skipped_step series (not an fp16 run)"),
    ("attention-logit-growth", "no train/max_attn_logit series with 20 finite points"),
    ("output-logit-drift", "no train/output_logz series with 20 finite points"),
    ("lr-schedule", "no train/lr series with 3 finite points"),
    ("rank-divergence", "fewer than 2 ranks logged for train/loss or train/grad_norm"),
)


def clean(n: int) -> Report:
    """``n`` healthy 20-step CSV runs, each skipped by the detectors a short log skips."""
    names = [f"run{i:06d}" for i in range(n)]
    runs = tuple(
        RunSummary(
            name=r,
            path=f"tree/group{i // 1000:04d}/{r}.csv",
            format="csv",
            steps=(1, 20),
            metrics=("train/grad_norm", "train/loss"),
            loss={"metric": "train/loss", "series": "train/loss", "why": "the training loss"},
            config=RunConfig(),
        )
        for i, r in enumerate(names)
    )
    skipped = tuple(
        Skipped(code="SD000", kind=k, run=r, reason=why) for r in names for k, why in CLEAN_SKIPS
    )
    return Report(runs=runs, findings=(), skipped=skipped, remedies=(), version="bench")


def _median(fn, repeats: int, clock=time.perf_counter) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeats):
        t = clock()
        fn()
        times.append(clock() - t)
    return statistics.median(times)


def bench_clean(n: int, repeats: int) -> None:
    report = clean(n)
    for width in (60, 80, 120):
        for color in (None, "standard"):
            opts = RenderOptions(width=width, color_system=color)
            fast = render(report, "text", opts)
            if fast != text_of(render_terminal(report), opts):
                raise SystemExit(f"width {width}, {color or 'plain'}: fast path != rich")
            cpu = {
                name: _median(fn, repeats, time.process_time)
                for name, fn in (
                    ("text", lambda o=opts: render(report, "text", o)),
                    ("rich", lambda o=opts: text_of(render_terminal(report), o)),
                )
            }
            print(
                f"clean {n:>6} runs  {width:>3} cols  {'tty' if color else 'plain':<5}  "
                f"text {cpu['text']:6.3f} s CPU  {cpu['text'] * 1e3 / n:6.3f} ms/run   "
                f"(rich alone {cpu['rich']:6.3f} s, {cpu['rich'] * 1e3 / n:.3f} ms/run)"
            )


def _text(report: Report, width: int) -> str:
    """The text report as ``stabdiag analyze`` prints it off a terminal (``render_text``)."""
    return render(report, "text", RenderOptions(width=width))


def _rich(report: Report, width: int) -> str:
    """The same through rich alone: the renderable ``render_terminal`` gives any console."""
    con = Console(file=io.StringIO(), theme=THEME, width=width, color_system=None, highlight=False)
    con.print(render_terminal(report))
    return con.file.getvalue()


def bench(label: str, report: Report, repeats: int) -> None:
    n = max(len(report.runs), 1)
    for name, fn in (
        ("text 80", lambda: _text(report, 80)),
        ("text 120", lambda: _text(report, 120)),
        ("rich 80", lambda: _rich(report, 80)),
        ("markdown", lambda: render_markdown(report)),
    ):
        t = _median(fn, repeats)
        print(
            f"{label:<12} {name:<9} {t * 1e3:9.0f} ms  {t * 1e3 / n:7.2f} ms/run  ({len(report.runs)} runs)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--real", action="store_true", help="also time the report of ../shared/real_logs"
    )
    ap.add_argument(
        "--clean", type=int, metavar="N", help="time N clean runs (text only, CPU seconds)"
    )
    args = ap.parse_args()
    if args.clean:
        bench_clean(args.clean, args.repeats)
        return
    bench("synthetic", synthetic(args.runs), args.repeats)
    if args.real:
        import stabdiag

        root = Path(__file__).resolve().parents[2] / "shared" / "real_logs"
        if not root.is_dir():
            raise SystemExit(f"{root}: not found (--real needs ../shared/real_logs)")
        report = stabdiag.analyze(sorted(p for p in root.iterdir() if p.is_dir()))
        bench("real_logs", report, args.repeats)


if __name__ == "__main__":
    main()
