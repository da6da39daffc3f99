"""The analysis spine: read -> table -> detect -> remedies -> Report. Never prints.

Read this file first: every other analysis module is one hop away from here.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import nullcontext
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
    jobs: int | None = None,
) -> Report:
    """Analyse the runs found under ``paths``: one Report with findings, skips and ranked remedies.

    ``jobs``: worker processes for reading and detecting when there are many runs (at least
    PARALLEL_MIN_RUNS); None = ``$STABDIAG_JOBS`` or every CPU; 1 = all in this process."""
    with _pool(jobs) as pool:
        loaded = sources.load(paths, fmt=fmt, overrides=overrides, pool=pool)
        return analyze_table(loaded.table, loaded.runs, errors=loaded.errors, select=select,
                             ignore=ignore, configs=configs, pool=pool)


PARALLEL_MIN_RUNS = 8  # below this, process start-up costs more than it saves


def resolve_jobs(jobs: int | None = None) -> int:
    if jobs is None:
        env = os.environ.get("STABDIAG_JOBS", "").strip()
        jobs = int(env) if env.isdigit() else 0
    if jobs <= 0:
        jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, jobs)


class _LazyPool(Executor):
    """A process pool started only when something is actually submitted (few runs: never)."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self._pool: ProcessPoolExecutor | None = None

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        if self._pool is None:
            # fork is cheap (no re-import) but unsafe once other threads exist (a spinner).
            method = "fork" if threading.active_count() == 1 and os.name == "posix" else "spawn"
            self._pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context(method))
        return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait, cancel_futures=cancel_futures)


def _pool(jobs: int | None) -> Any:
    n = resolve_jobs(jobs)
    return _LazyPool(n) if n > 1 else nullcontext(None)


def _detect_chunk(runs: list[RunData], select: Collection[str] | None, ignore: Collection[str] | None,
                  configs: Mapping[str, Any] | None) -> tuple[list[Any], list[Any]]:
    return run_detectors(runs, select=select, ignore=ignore, configs=configs)


def analyze_table(
    table: MetricsTable,
    runs: Sequence[sources.RunInfo],
    *,
    errors: Sequence[str] = (),
    select: Collection[str] | None = None,
    ignore: Collection[str] | None = None,
    configs: Mapping[str, Any] | None = None,
    pool: Executor | None = None,
) -> Report:
    """Detect and advise on an already-loaded table (used by ``diagnose`` and by ``train``).

    With a process ``pool`` and at least PARALLEL_MIN_RUNS runs, detectors run in its workers on
    contiguous slices of the runs; the merged result equals the serial one."""
    parts = _by_run(table, runs)
    data = {r.name: parts.get(r.name, table).run_data(r.name, meta=r.meta) for r in runs}
    values = list(data.values())
    if pool is not None and len(values) >= PARALLEL_MIN_RUNS:
        k = max(1, -(-len(values) // (4 * getattr(pool, "jobs", 2))))
        chunks = [values[i:i + k] for i in range(0, len(values), k)]
        findings, skipped = [], []
        for f, s in pool.map(_detect_chunk, chunks, *([x] * len(chunks) for x in (select, ignore, configs))):
            findings += f
            skipped += s
        # run_detectors' order (stable): by run, then step; chunks are contiguous runs in order.
        order = {r.name: i for i, r in enumerate(values)}
        findings.sort(key=lambda f: (order.get(f.run, len(order)),
                                     f.step_start if f.step_start is not None else -1))
    else:
        findings, skipped = run_detectors(values, select=select, ignore=ignore, configs=configs)
    return Report(
        runs=tuple(summarize(r, data[r.name]) for r in runs),
        findings=tuple(findings),
        skipped=tuple(skipped),
        remedies=tuple(suggest(findings, data)),
        errors=tuple(errors),
        version=__version__,
        table=table,
    )


def _by_run(table: MetricsTable, runs: Sequence[sources.RunInfo]) -> dict[str, MetricsTable]:
    """Each run's rows as its own table, split in one pass (run_data on the whole table would
    scan every row once per run). A run's own table cuts into the same series."""
    if len(runs) < 2 or not len(table):
        return {}
    f = table.frame
    return {name: MetricsTable(f.take(idx)) for name, idx in f.groupby("run", sort=False).indices.items()}


def summarize(info: sources.RunInfo, run: RunData) -> RunSummary:
    steps = [int(s.steps[i]) for s in run.series.values() if len(s) for i in (0, -1)]
    return RunSummary(
        name=info.name, path=info.path, format=info.format,
        steps=(min(steps), max(steps)) if steps else None,
        metrics=tuple(sorted(run.series)), warnings=tuple(info.warnings), mapping=tuple(info.mapping),
    )
