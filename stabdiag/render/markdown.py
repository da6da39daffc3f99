"""The Markdown report: fits a PR comment and ``$GITHUB_STEP_SUMMARY``.

Every string that comes from a log (run names, paths, metric names, messages, warnings) goes
through ``md`` first: GitHub renders inline HTML and Markdown inside table cells, so an unescaped
``|``, ``<script>``, ``[link](...)`` or ``@team`` in a run name could break the table, inject
markup or ping people. Output is deterministic given the report and ``generated``.
"""

from __future__ import annotations

import html
import os
import re
import urllib.parse
from collections.abc import Mapping

from stabdiag.findings import Finding
from stabdiag.render import RunIndex
from stabdiag.render.notchecked import group
from stabdiag.render.terminal import by_path
from stabdiag.report import Report, RunSummary, counts
from stabdiag.textfmt import EN_DASH, step_span
from stabdiag.words import count, tally

ICON = {"error": "❌", "warning": "⚠️", "info": "ℹ️", None: "✅"}
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~#!])")
_BLOCK_START = re.compile(r"^(\s*)([-+>=]|\d+(?=[.)]))")
_ZWSP = "\u200b"
_AUTOLINK = re.compile(r"(?i)www\.|:/")  # the "." of "www." and the first "/" of "://"
# GitHub comments are capped at 65536 characters; keep well below with long runs.
MAX_FINDINGS_PER_RUN = 30


def md(text: object) -> str:
    """Escape a log-derived string for inline Markdown (table cells, list items)."""
    s = html.escape(str(text), quote=False)
    s = re.sub(r"[\r\n\t]+", " ", s)
    s = _MD_SPECIAL.sub(r"\\\1", s)
    # No links or pings from log text: GitHub decodes entities before it autolinks and mentions,
    # so an invisible zero-width space is what breaks "@team", "ops@evil.example",
    # "www.evil.example" and "https://..." (GFM autolink rules need the characters adjacent).
    s = _AUTOLINK.sub(lambda m: m.group()[:-1] + _ZWSP + m.group()[-1], s)
    s = s.replace("@", _ZWSP + "@" + _ZWSP)
    # A leading "-", "+", ">", "=" or "1." would open a list, quote or heading: escape it.
    m = _BLOCK_START.match(s)
    if m:
        cut = m.end()
        s = (
            s[:cut] + "\\" + s[cut:]
            if m.group(2)[0].isdigit()
            else s[: m.start(2)] + "\\" + s[m.start(2) :]
        )
    return s


def steps_of(f: Finding) -> str:
    return step_span(f.step_start, f.step_end, dash=EN_DASH, none=EN_DASH)


def verdict(report: Report, run: RunSummary) -> str:
    """The one-line verdict shared by the Markdown and HTML reports."""
    ix = RunIndex.of(report)
    if run.name not in ix.judged:
        return "not judged: no loss series"
    return tally(counts(ix.findings.get(run.name, [])), none="healthy: no findings")


def _run_row(report: Report, run: RunSummary) -> str:
    ix = RunIndex.of(report)
    worst = ix.worst.get(run.name)
    icon = ICON[worst.label if worst else None] if run.name in ix.judged else "❔"
    span = step_span(*run.steps, dash=EN_DASH) if run.steps else EN_DASH
    return (
        f"| {icon} | {md(run.name)} | {md(run.format)} | {span} | {len(run.metrics)} "
        f"| {verdict(report, run)} |"
    )


def render_markdown(
    report: Report,
    *,
    images: Mapping[str, str] | None = None,
    generated: str | None = None,
    max_findings: int = MAX_FINDINGS_PER_RUN,
) -> str:
    """The whole report as GitHub-flavoured Markdown.

    ``images`` maps run name -> image URL or relative path (from ``--plots``); ``generated`` is a
    timestamp the caller injects (kept out of the renderer so output is reproducible).
    """
    n = len(report.runs)
    runs = by_path(report.runs)
    lines = [
        f"## stabdiag: {count(n, 'run')}{', listed by path' if n > 1 else ''} · "
        f"{tally(counts(report.findings))}",
        "",
        "| | run | format | steps | metrics | verdict |",
        "|---|---|---|---|---:|---|",
        *(_run_row(report, r) for r in runs),
        "",
    ]
    if report.errors:
        lines += ["**Unreadable input**", ""]
        lines += [f"- {md(e)}" for e in report.errors]
        lines.append("")
    for run in runs:
        lines += _run_section(report, run, images or {}, max_findings)
    foot = f"stabdiag {html.escape(report.version)}" + (f" · {md(generated)}" if generated else "")
    lines += [f"<sub>{foot}</sub>", ""]
    return "\n".join(lines)


def _run_section(
    report: Report, run: RunSummary, images: Mapping[str, str], max_findings: int
) -> list[str]:
    ix = RunIndex.of(report)
    worst = ix.worst.get(run.name)
    judged = run.name in ix.judged
    icon = (
        ICON[worst.label if worst else None] if judged else "❔"
    )  # never a tick on an unjudged run
    said = verdict(report, run) if judged or not run.judged_reason else run.judged_reason
    out = [f"### {icon} {md(run.name)}", "", f"{md(run.format)} · {md(run.path)} · {md(said)}", ""]
    if run.config_line():
        out += [f"**Configured**: {md(run.config_line())}", ""]
    d = run.diagnosis
    if d is not None and d.cause != "healthy":
        out += [f"**Diagnosis** ({md(d.confidence)} confidence): {md(d.statement)}", ""]
    for w in run.warnings:
        out.append(f"> **Input**: {md(w)}")
    if run.warnings:
        out.append("")
    fs = ix.findings.get(run.name, [])
    if fs:
        out += ["| severity | kind | steps | finding |", "|---|---|---:|---|"]
        for f in fs[:max_findings]:
            out.append(
                f"| {ICON[f.severity.label]} {f.severity.label} | `{f.code}` {md(f.kind)} "
                f"| {steps_of(f)} | {md(f.message)} |"
            )
        if len(fs) > max_findings:
            out.append(f"| | | | … {len(fs) - max_findings} more in the JSON report |")
        out.append("")
    rems = ix.remedies.get(run.name, [])
    if rems:
        out += ["**What to change**", ""]
        for r in rems:
            addr = f" _(addresses: {', '.join(md(a) for a in r.addresses)})_" if r.addresses else ""
            out.append(f"{r.rank}. **{md(r.title)}**{addr}")
            out += [f"   - {md(a)}" for a in r.actions]
            if r.watch:
                out.append(f"   - _watch:_ {md(r.watch)}")
        out.append("")
    skipped = ix.skipped.get(run.name, [])
    if skipped:
        # One bullet per true reason (render/notchecked.py); JSON keeps each detector's words.
        out += [f"<details><summary>Not checked ({len(skipped)})</summary>", ""]
        out += [
            f"- {', '.join(md(k) for k in nc.kinds)}: {md(nc.reason)}"
            for nc in group(skipped, run.metrics)
        ]
        out += ["", "</details>", ""]
    if run.name in images:
        # The URL comes from our own plot file names (safe_name); escape it anyway.
        # Percent-encode the path's bytes: spaces and parentheses end a Markdown link, and a
        # non-UTF-8 directory name (a lone surrogate in Python) has no other UTF-8 spelling.
        url = urllib.parse.quote(os.fsencode(images[run.name]), safe="/:.-_~")
        out += [f"![stability plot of {md(run.name)}]({url})", ""]
    return out
