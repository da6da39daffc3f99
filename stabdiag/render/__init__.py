"""Renderers: pure functions from a ``Report`` to text. Only ``cli.py`` writes their output."""

from __future__ import annotations

import enum


class OutputFormat(str, enum.Enum):
    """Every ``--format`` value; each maps to exactly one renderer (tested exhaustively)."""

    TEXT = "text"
    JSON = "json"
    MARKDOWN = "markdown"
    HTML = "html"
    JUNIT = "junit"
    GITHUB = "github"


class RunIndex:
    """A report's findings, skips and remedies grouped by run once.

    Renderers ask for "this run's findings" once per run; filtering the whole report each time
    made Markdown and HTML quadratic in the number of runs (500 runs: minutes). ``of`` keeps the
    index of the last report it was asked about, so the helpers of one render share it.
    """

    _last: tuple[object, RunIndex] | None = None

    def __init__(self, report) -> None:  # noqa: ANN001 - stabdiag.report.Report (import cycle)
        from collections import defaultdict

        self.findings: dict[str, list] = defaultdict(list)
        self.skipped: dict[str, list] = defaultdict(list)
        self.remedies: dict[str, list] = defaultdict(list)
        for f in report.findings:
            self.findings[f.run].append(f)
        for s in report.skipped:
            self.skipped[s.run].append(s)
        for r in report.remedies:
            self.remedies[r.run].append(r)
        self.judged = frozenset(report.judged_runs())
        self.worst = {run: max(f.severity for f in fs) for run, fs in self.findings.items()}

    @classmethod
    def of(cls, report) -> RunIndex:  # noqa: ANN001
        last = cls._last
        if last is None or last[0] is not report:
            last = cls._last = (report, cls(report))
        return last[1]
