"""The terminal report: a summary line per run, its findings table, what was not checked, remedies.

Every line that can run past the width is a hanging indent: its continuation lines start under
its first word ("- lower the peak LR ...", the text after "watch: "), on a terminal and in a CI
log alike, so a wrapped remedy never lands at column 0 among the run headers. Lines carry no
trailing blanks (rich pads table cells to their column width; a log or a diff shows them).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.segment import Segment
from rich.text import Text

from stabdiag.console import SEVERITY_STYLE
from stabdiag.findings import Finding, Severity
from stabdiag.render import RunIndex
from stabdiag.render.notchecked import group
from stabdiag.report import Report, RunSummary, counts
from stabdiag.table import TRAIN_LOSS
from stabdiag.textfmt import at_steps, step_span
from stabdiag.words import count, tally

MARK = {"error": "✘", "warning": "!", "info": "·", None: "✔"}


def _steps(f: Finding) -> str:
    return step_span(f.step_start, f.step_end)


class _Hang:
    """``lead`` then ``body``; the lines ``body`` wraps onto start under its first character.

    ``lead`` is the indent and label ("  input: ", "     - "); it never wraps. A lead longer
    than a third of the width would leave a narrow ribbon of text, so there (unless ``keep``)
    the continuation lines start two columns in from the lead's indent instead. Lines end at
    their last character: no blanks padded to the width for a log or a diff to show."""

    def __init__(self, lead: Text, body: Text, *, keep: bool = False) -> None:
        self.lead, self.body, self.keep = lead, body, keep

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        # Wrapped here rather than laid out as rich Tables: a Table per line made the report of
        # 500 runs twice as slow to print.
        lead, body, width = self.lead, self.body, options.max_width
        n = lead.cell_len
        if not self.keep and n > width // 3:
            indent = n - len(lead.plain.lstrip(" "))
            body = lead[indent:] + body
            first, pad = Text(" " * indent), " " * (indent + 2)
        else:
            first, pad = lead, " " * n
        lines = body.wrap(console, max(width - len(pad), 8), overflow="fold")
        for i, line in enumerate(lines):
            line.rstrip()
            row = Text()  # each part's own style becomes a span: Text.render drops a base style
            row.append(first if i == 0 else pad)
            row.append(line)
            yield from row.render(console)
            yield Segment.line()


def hang(lead: str, body: Text | str, *, style: str = "", lead_style: str | None = None) -> _Hang:
    """A line whose continuation lines keep its indentation (see ``_Hang``)."""
    return _Hang(
        Text(lead, style=style if lead_style is None else lead_style),
        body if isinstance(body, Text) else Text(body, style=style),
    )


def _verdict(report: Report, run: RunSummary, ix: RunIndex) -> _Hang:
    worst = ix.worst.get(run.name)
    judged = report.has_loss(run.name)
    label = worst.label if worst else None
    mark = MARK[label] if run.judged else "?"  # never a tick on a run nothing was said about
    steps = at_steps(*run.steps) if run.steps else "no steps"
    line = Text()
    line.append(run.name, style="bold")
    line.append(f"  {run.format}, {steps}, {count(len(run.metrics), 'metric')}  ", style="dim")
    if not run.judged:
        line.append(run.judged_reason or "not judged: no loss series", style="warning")
    elif worst is not None:
        if (
            not judged
            and run.loss is None
            and not run.judged_reason.startswith("judged as an RL run")
        ):
            line.append("no loss series; ", style="warning")
        line.append(
            tally(counts(ix.findings.get(run.name, []))), style=SEVERITY_STYLE.get(label or "", "")
        )
    else:
        line.append("healthy: no findings", style="ok")
    return hang(
        f"{mark} ",
        line,
        lead_style=SEVERITY_STYLE.get(label or "", "ok" if run.judged else "warning"),
    )


class _Findings:
    """A run's findings as a table whose message column wraps under itself; where the width
    leaves that column under ``MIN_MESSAGE`` columns, each finding is a heading line with its
    message hanging below it instead."""

    MIN_MESSAGE = 36
    HEAD = ("severity", "kind", "steps")

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        fs = self.findings
        cols = [(f.severity.label, f.kind, _steps(f)) for f in fs]
        w = [max(len(h), *(len(c[i]) for c in cols)) for i, h in enumerate(self.HEAD)]
        if options.max_width - (2 + sum(w) + 6) < self.MIN_MESSAGE:
            for f in fs:
                head = Text(f.severity.label, style=SEVERITY_STYLE[f.severity.label])
                head.append(f"  {f.kind}  {at_steps(f.step_start, f.step_end)}".rstrip())
                yield _Hang(Text("  "), head)
                yield hang("    ", Text(f.message))
            return
        yield Text(
            f"  {'severity':<{w[0]}}  {'kind':<{w[1]}}  {'steps':>{w[2]}}  finding", style="bold"
        )
        for f, (sev, kind, steps) in zip(fs, cols, strict=True):
            lead = Text("  ")
            lead.append(f"{sev:<{w[0]}}", style=SEVERITY_STYLE[sev])
            lead.append(f"  {kind:<{w[1]}}  {steps:>{w[2]}}  ")
            yield _Hang(lead, Text(f.message), keep=True)  # Text: a message is never markup


def _remedies(rems: list, max_remedies: int) -> Iterable[RenderableType]:
    yield Text("  what to change:", style="bold")
    for r in rems[:max_remedies]:
        title = Text(r.title, style="bold")
        if r.addresses:
            title.append(f"  [{', '.join(r.addresses)}]", style="dim")
        yield hang(f"  {r.rank}. ", title, lead_style="bold")
        pad = " " * (len(str(r.rank)) + 4)
        for a in r.actions:
            yield hang(f"{pad}- ", a)
        if r.watch:
            yield hang(f"{pad}watch: ", r.watch, style="dim")
    if len(rems) > max_remedies:
        yield Text(f"  (+{len(rems) - max_remedies} more: --max-remedies)", style="dim")


def _verify_hint(run: RunSummary) -> Iterable[RenderableType]:
    own = run.config is not None and getattr(run.config, "fw", "") == "stabdiag"
    where = run.path[: -len("/metrics.csv")] if run.path.endswith("/metrics.csv") else run.path
    how = (
        "replays the event from a checkpoint with each remedy and a control"
        if own
        else "a small model with this run's settings"
    )
    yield hang("  ", f"test a fix before paying for it ({how}):", style="dim")
    # On its own line, quoted: a command to copy, not prose to read.
    yield hang(
        "    ", f"stabdiag verify {shlex.quote(where)}" + ("" if own else " --proxy"), style="dim"
    )


def _run(
    report: Report, run: RunSummary, ix: RunIndex, *, max_remedies: int, show_skipped: bool
) -> Iterable[RenderableType]:
    yield Text("")
    yield _verdict(report, run, ix)
    if run.loss and run.loss.get("series") != TRAIN_LOSS:
        taken = (
            f"{run.loss['series']} taken as {run.loss['metric']}: "
            if run.loss["series"] != run.loss["metric"]
            else ""
        )
        yield hang("  loss: ", f"{taken}{run.loss['why']}", style="dim")
    if run.config_line():
        yield hang("  configured: ", run.config_line(), style="dim")
    for w in run.warnings:
        yield hang("  input: ", w, style="warning")
    fs = ix.findings.get(run.name, [])
    if fs:
        yield _Findings(fs)
    if show_skipped:
        # The true reason per detector, one line per reason; the detectors' own words are in
        # --format json and `stabdiag explain KIND`.
        for nc in group(ix.skipped.get(run.name, []), run.metrics):
            yield hang(
                "  not checked: ", f"{', '.join(nc.kinds)} \N{EM DASH} {nc.reason}", style="dim"
            )
    d = run.diagnosis
    if d is not None and d.cause != "healthy":
        yield hang(f"  diagnosis ({d.confidence} confidence): ", d.statement, style="bold")
    rems = ix.remedies.get(run.name, [])
    if rems:
        yield from _remedies(rems, max_remedies)
    if any(f.severity >= Severity.WARNING for f in fs):
        yield from _verify_hint(run)


def by_path(runs: Iterable[RunSummary]) -> list[RunSummary]:
    """Runs in the order the human reports list them: by path (then name), like ``ls``."""
    return sorted(runs, key=lambda r: (r.path, r.name))


def render_terminal(
    report: Report, *, max_remedies: int = 5, show_skipped: bool = True
) -> RenderableType:
    ix = RunIndex.of(report)
    n = len(report.runs)
    runs = count(n, "run") + (", listed by path" if n > 1 else "")
    parts: list[RenderableType] = [
        Text(f"stabdiag {report.version} · {runs} · {tally(counts(report.findings))}", style="bold")
    ]
    for err in report.errors:
        parts.append(hang("  unreadable: ", err, style="warning"))
    for run in by_path(report.runs):
        parts.extend(_run(report, run, ix, max_remedies=max_remedies, show_skipped=show_skipped))
    return Group(*parts)
