"""The analysis spine: read -> table -> detect -> remedies -> Report. Never prints.

Read this file first: every other analysis module is one hop away from here.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from stabdiag import __version__, sources
from stabdiag.detectors import run_detectors
from stabdiag.remedies import suggest
from stabdiag.report import Report, RunSummary
from stabdiag.table import MetricsTable, RunData


def diagnose(
    paths: Sequence[str | Path],
    *,
    fmt: str | None = None,
    overrides: Mapping[str, str] | None = None,
    select: Collection[str] | None = None,
    ignore: Collection[str] | None = None,
    configs: Mapping[str, Any] | None = None,
) -> Report:
    """Analyse the runs found under ``paths``: one Report with findings, skips and ranked remedies."""
    loaded = sources.load(paths, fmt=fmt, overrides=overrides)
    return analyze_table(loaded.table, loaded.runs, errors=loaded.errors, select=select, ignore=ignore,
                         configs=configs)


def analyze_table(
    table: MetricsTable,
    runs: Sequence[sources.RunInfo],
    *,
    errors: Sequence[str] = (),
    select: Collection[str] | None = None,
    ignore: Collection[str] | None = None,
    configs: Mapping[str, Any] | None = None,
) -> Report:
    """Detect and advise on an already-loaded table (used by ``diagnose`` and by ``train``)."""
    data = {r.name: table.run_data(r.name, meta=r.meta) for r in runs}
    findings, skipped = run_detectors(list(data.values()), select=select, ignore=ignore,
                                       configs=configs)
    return Report(
        runs=tuple(summarize(r, data[r.name]) for r in runs),
        findings=tuple(findings),
        skipped=tuple(skipped),
        remedies=tuple(suggest(findings, data)),
        errors=tuple(errors),
        version=__version__,
        table=table,
    )


def summarize(info: sources.RunInfo, run: RunData) -> RunSummary:
    steps = [int(s.steps[i]) for s in run.series.values() if len(s) for i in (0, -1)]
    return RunSummary(
        name=info.name, path=info.path, format=info.format,
        steps=(min(steps), max(steps)) if steps else None,
        metrics=tuple(sorted(run.series)), warnings=tuple(info.warnings), mapping=tuple(info.mapping),
    )
