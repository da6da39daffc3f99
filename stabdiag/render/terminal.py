"""The terminal report: a summary line per run, its findings table, what was not checked, remedies."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from stabdiag.console import SEVERITY_STYLE
from stabdiag.findings import Finding, Severity
from stabdiag.report import Report, RunSummary, counts
from stabdiag.table import TRAIN_LOSS

MARK = {"error": "✘", "warning": "!", "info": "·", None: "✔"}


def _steps(f: Finding) -> str:
    if f.step_start is None:
        return "-"
    return str(f.step_start) if f.step_end in (None, f.step_start) else f"{f.step_start}-{f.step_end}"


def _verdict(report: Report, run: RunSummary) -> Text:
    worst = report.worst(run.name)
    judged = report.has_loss(run.name)
    label = worst.label if worst else None
    mark = MARK[label] if run.judged else "?"  # never a tick on a run nothing was said about
    c = counts(report.findings_of(run.name))
    parts = [f"{n} {k}{'s' if n != 1 and k != 'info' else ''}" for k, n in
             (("error", c["error"]), ("warning", c["warning"]), ("info", c["info"])) if n]
    steps = f"steps {run.steps[0]}-{run.steps[1]}" if run.steps else "no steps"
    line = Text()
    line.append(f"{mark} ", style=SEVERITY_STYLE.get(label or "", "ok" if run.judged else "warning"))
    line.append(run.name, style="bold")
    line.append(f"  {run.format}, {steps}, {len(run.metrics)} metrics  ", style="dim")
    if not run.judged:
        line.append(run.judged_reason or "not judged: no loss series", style="warning")
    elif parts:
        if not judged and run.loss is None and not run.judged_reason.startswith("judged as an RL run"):
            line.append("no loss series; ", style="warning")
        line.append(", ".join(parts), style=SEVERITY_STYLE.get(label or "", ""))
    else:
        line.append("healthy: no findings", style="ok")
    return line


def _findings_table(findings: list[Finding]) -> Table:
    t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    t.add_column("severity")
    t.add_column("kind")
    t.add_column("steps", justify="right")
    t.add_column("finding", overflow="fold")
    for f in findings:
        t.add_row(Text(f.severity.label, style=SEVERITY_STYLE[f.severity.label]),
                  f.kind, _steps(f), Text(f.message))  # Text: a message is never markup
    return t


def render_terminal(report: Report, *, max_remedies: int = 5, show_skipped: bool = True) -> RenderableType:
    c = counts(report.findings)
    head = Text(f"stabdiag {report.version} · {len(report.runs)} run{'s' if len(report.runs) != 1 else ''}"
                f" · {c['error']} error, {c['warning']} warning, {c['info']} info", style="bold")
    parts: list[RenderableType] = [head]
    for err in report.errors:
        parts.append(Text(f"  unreadable: {err}", style="warning"))
    for run in report.runs:
        parts.append(Text(""))
        parts.append(_verdict(report, run))
        if run.loss and run.loss.get("series") != TRAIN_LOSS:
            taken = (f"{run.loss['series']} taken as {run.loss['metric']}: "
                     if run.loss["series"] != run.loss["metric"] else "")
            parts.append(Text(f"  loss: {taken}{run.loss['why']}", style="dim"))
        if run.config_line():
            parts.append(Text(f"  configured: {run.config_line()}", style="dim"))
        for w in run.warnings:
            parts.append(Text(f"  input: {w}", style="warning"))
        fs = report.findings_of(run.name)
        if fs:
            parts.append(_findings_table(fs))
        skipped = [s for s in report.skipped if s.run == run.name]
        if show_skipped and skipped:
            # Kinds only: the reasons are in --format json and `stabdiag explain KIND`.
            parts.append(Text("  not checked (metric not logged): " + ", ".join(s.kind for s in skipped),
                              style="dim"))
        d = run.diagnosis
        if d is not None and d.cause != "healthy":
            parts.append(Text(f"  diagnosis ({d.confidence} confidence): {d.statement}", style="bold"))
        rems = [r for r in report.remedies if r.run == run.name]
        if rems:
            parts.append(Text("  what to change:", style="bold"))
            for r in rems[:max_remedies]:
                line = Text(f"  {r.rank}. {r.title}", style="bold")
                line.append(f"  [{', '.join(r.addresses)}]", style="dim")
                parts.append(line)
                for a in r.actions:
                    parts.append(Text(f"       - {a}"))
                if r.watch:
                    parts.append(Text(f"       watch: {r.watch}", style="dim"))
            if len(rems) > max_remedies:
                parts.append(Text(f"     (+{len(rems) - max_remedies} more in --format json)", style="dim"))
            if report.at_or_above(Severity.WARNING) and any(
                    f.run == run.name and f.severity >= Severity.WARNING for f in report.findings):
                own = run.config is not None and getattr(run.config, "fw", "") == "stabdiag"
                where = run.path[: -len("/metrics.csv")] if run.path.endswith("/metrics.csv") else run.path
                parts.append(Text(
                    f"  test a fix before paying for it: stabdiag verify {where}"
                    + (" (replays the event from a checkpoint with each remedy and a control)" if own
                       else " --proxy (a small model with this run's settings)"), style="dim"))
    return Group(*parts)
