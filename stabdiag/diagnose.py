"""The analysis spine: read -> table -> detect -> remedies -> Report. Never prints.

Read this file first: every other analysis module is one hop away from here.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from stabdiag import __version__, gcpause, loss_choice, sources
from stabdiag.detectors import rl_common, run_detectors, sort_findings
from stabdiag.diagnosis import diagnose_run
from stabdiag.findings import Finding, Skipped
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
    cache: bool = True,
) -> Report:
    """Analyse the runs found under ``paths``: one Report with findings, skips and ranked remedies.

    ``jobs``: worker processes for reading and detecting when there are many runs (at least
    PARALLEL_MIN_RUNS); None = ``$STABDIAG_JOBS`` or every CPU; 1 = all in this process.
    ``cache``: False re-parses every log (the parsed-log cache is neither read nor written)."""
    with gcpause.paused(), _pool(jobs) as pool:
        # with a pool, each run is detected in the worker that read it (only findings travel)
        then = functools.partial(_judge_read, select=select, ignore=ignore, configs=configs)
        loaded = sources.load(
            paths, fmt=fmt, overrides=overrides, pool=pool, cache=cache, then=then
        )
        return analyze_table(
            loaded.table,
            loaded.runs,
            errors=loaded.errors,
            select=select,
            ignore=ignore,
            configs=configs,
            pool=pool,
            parts=loaded.parts,
            detected=loaded.done,
        )


PARALLEL_MIN_RUNS = 8  # below this, process start-up costs more than it saves


def resolve_jobs(jobs: int | None = None) -> int:
    if jobs is None:
        env = os.environ.get("STABDIAG_JOBS", "").strip()
        jobs = int(env) if env.isdigit() else 0
    if jobs <= 0:
        jobs = (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1
        )
    return max(1, jobs)


class _LazyPool(Executor):
    """A process pool started only when something is actually submitted (few runs: never)."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self._pool: ProcessPoolExecutor | None = None

    def _started(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # fork is cheap (no re-import) but unsafe once other threads exist (a spinner).
            method = "fork" if threading.active_count() == 1 and os.name == "posix" else "spawn"
            self._pool = ProcessPoolExecutor(
                self.jobs, mp_context=multiprocessing.get_context(method)
            )
        return self._pool

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        return self._started().submit(fn, *args, **kwargs)

    def map(
        self, fn: Any, *iterables: Any, timeout: float | None = None, chunksize: int = 1
    ) -> Any:
        # Executor.map ignores ``chunksize`` (one task, one pickle round trip per item: reading
        # 10,000 small files in a pool cost twice the CPU of reading them here, issue 13 R4)
        return self._started().map(fn, *iterables, timeout=timeout, chunksize=chunksize)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait, cancel_futures=cancel_futures)


def _pool(jobs: int | None) -> Any:
    n = resolve_jobs(jobs)
    return _LazyPool(n) if n > 1 else nullcontext(None)


def _detect_runs(
    runs: list[RunData],
    select: Collection[str] | None,
    ignore: Collection[str] | None,
    configs: Mapping[str, Any] | None,
) -> tuple[list[Any], list[Any]]:
    """``run_detectors`` on a slice of runs (in a worker: the runs' series travel there, only
    findings and skips come back; the parent keeps the series it cut)."""
    return run_detectors(runs, select=select, ignore=ignore, configs=configs)


def _judge_read(
    read: Sequence[tuple[sources.RunInfo, RunData]],
    select: Collection[str] | None,
    ignore: Collection[str] | None,
    configs: Mapping[str, Any] | None,
) -> list[tuple[list[Finding], list[tuple[str, str, str]], Any, RunSummary]]:
    """Freshly read runs judged whole, as ``analyze_table`` would judge them (the ``then`` of
    ``sources.load``: it runs in the worker that read them): per run its findings, skips,
    diagnosis and summary, so the parent never cuts the run. Skips travel as (code, kind,
    reason): most runs have several, and the parent names them (``_named``)."""
    data = [with_loss(run) for _, run in read]
    findings, skipped = run_detectors(data, select=select, ignore=ignore, configs=configs)
    own_f, own_s = _per_run(findings), _per_run(skipped)
    out = []
    for (info, _), run in zip(read, data, strict=True):
        f, s = own_f.get(run.name, []), own_s.get(run.name, [])
        diagnosis, summary = _judge(info, run, f, s)
        out.append((f, [(x.code, x.kind, x.reason) for x in s], diagnosis, summary))
    return out


def _judge(
    info: sources.RunInfo, run: RunData, findings: Sequence[Finding], skipped: Sequence[Skipped]
) -> tuple[Any, RunSummary]:
    """A run's diagnosis and summary from its own findings and skips."""
    diagnosis = diagnose_run(findings, run)
    return diagnosis, summarize(info, run, findings, skipped, diagnosis)


def _named(got: tuple, run: str) -> tuple:
    """A run judged in a worker (``_judge_read``), under the run's own name (the worker knew only
    its base name)."""
    findings, skips, diagnosis, summary = got
    if diagnosis is not None and diagnosis.run != run:
        diagnosis = replace(diagnosis, run=run)
    if summary.name != run or summary.diagnosis is not None and summary.diagnosis.run != run:
        summary = replace(
            summary, name=run, diagnosis=diagnosis if summary.diagnosis is not None else None
        )
    return (
        [f if f.run == run else replace(f, run=run) for f in findings],
        [Skipped(code=c, kind=k, run=run, reason=r) for c, k, r in skips],
        diagnosis,
        summary,
    )


class _Cut(Mapping):
    """Each run's series (its loss chosen: ``with_loss``), cut from its rows on first use: a text
    or JSON report never needs them for runs judged in workers, plots and advice ask for few."""

    def __init__(self, runs: Sequence[sources.RunInfo], pieces: Sequence[Any]) -> None:
        self._src = {r.name: (r, p) for r, p in zip(runs, pieces, strict=True)}
        self._cut: dict[str, RunData] = {}

    def __getitem__(self, name: str) -> RunData:
        data = self._cut.get(name)
        if data is None:
            info, piece = self._src[name]
            data = self._cut[name] = with_loss(piece.run_data(info.name, meta=info.meta))
        return data

    def __iter__(self) -> Iterator[str]:
        return iter(self._src)

    def __len__(self) -> int:
        return len(self._src)


def with_loss(run: RunData) -> RunData:
    """The run with its evident loss series chosen (loss_choice.py); the choice rides in
    ``meta["loss_choice"]`` so the report can say which series was judged and why."""
    chosen, choice = loss_choice.choose(run)
    return replace(chosen, meta={**chosen.meta, "loss_choice": choice})


def analyze_table(
    table: MetricsTable,
    runs: Sequence[sources.RunInfo],
    *,
    errors: Sequence[str] = (),
    select: Collection[str] | None = None,
    ignore: Collection[str] | None = None,
    configs: Mapping[str, Any] | None = None,
    pool: Executor | None = None,
    parts: Sequence[Any] = (),
    detected: Sequence[Any] = (),
) -> Report:
    """Detect and advise on an already-loaded table (used by ``diagnose`` and by ``train``).

    ``parts``: each run's rows in ``runs`` order, anything with ``run_data(name, meta)``
    (LoadResult.parts), else ``table`` is split. Runs are cut into series here; with a process
    ``pool`` and at least PARALLEL_MIN_RUNS runs they are detected in its workers, in contiguous
    slices of the runs; the merged result equals the serial one. ``detected``: per run, its
    (findings, skips) already found in a loading worker (LoadResult.done), or None."""
    pieces = parts if len(parts) == len(runs) else _by_run(table, runs)
    data = _Cut(runs, pieces)
    names = list(data)
    judged: list[Any] = list(detected) if len(detected) == len(runs) else [None] * len(runs)
    todo = [i for i, got in enumerate(judged) if got is None]
    rest = [data[names[i]] for i in todo]
    if pool is not None and len(rest) >= PARALLEL_MIN_RUNS:
        k = max(1, -(-len(rest) // (4 * getattr(pool, "jobs", 2))))
        chunks = [rest[i : i + k] for i in range(0, len(rest), k)]
        f_rest, s_rest = [], []
        for f, s in pool.map(
            _detect_runs, chunks, *([x] * len(chunks) for x in (select, ignore, configs))
        ):
            f_rest += f
            s_rest += s
    else:
        f_rest, s_rest = _detect_runs(rest, select, ignore, configs)
    # each run's summary reads only its own findings and skips: grouped once, not scanned per run
    # (a scan per run made 100,000 runs quadratic: issue 13 R4)
    own_f, own_s = _per_run(f_rest), _per_run(s_rest)
    findings: list[Finding] = []
    skipped: list[Skipped] = []
    diagnoses: dict[str, Any] = {}
    summaries: list[RunSummary] = []
    for i, (info, name) in enumerate(zip(runs, names, strict=True)):
        if judged[i] is None:
            f, s = own_f.get(name, []), own_s.get(name, [])
            diagnosis, summary = _judge(info, data[name], f, s)
        else:
            f, s, diagnosis, summary = _named(judged[i], name)
        findings += f
        skipped += s
        diagnoses[name] = diagnosis
        summaries.append(summary)
    findings = sort_findings(findings, names)  # each run's own are in order already
    return Report(
        runs=tuple(summaries),
        findings=tuple(findings),
        skipped=tuple(skipped),
        remedies=tuple(suggest(findings, data, diagnoses)),
        errors=tuple(errors),
        version=__version__,
        table=table,
        series=data,
    )


def _per_run(items: Sequence[Any]) -> dict[str, list[Any]]:
    """Findings or skips grouped by their ``run``, each group in the original order."""
    out: dict[str, list[Any]] = {}
    for it in items:
        out.setdefault(it.run, []).append(it)
    return out


def _by_run(table: MetricsTable, runs: Sequence[sources.RunInfo]) -> list[MetricsTable]:
    """Each run's rows as its own table, in ``runs`` order, split in one pass (run_data on the
    whole table would scan every row once per run). A run's own table cuts into the same series."""
    if len(runs) < 2 or not len(table):
        return [table] * len(runs)
    f = table.frame
    idx = f.groupby("run", sort=False).indices
    none = MetricsTable(f.iloc[:0])  # a run without rows
    return [MetricsTable(f.take(idx[r.name])) if r.name in idx else none for r in runs]


def summarize(
    info: sources.RunInfo,
    run: RunData,
    findings: Sequence[Any] = (),
    skipped: Sequence[Any] = (),
    diagnosis: Any = None,
) -> RunSummary:
    steps = [int(s.steps[i]) for s in run.series.values() if len(s) for i in (0, -1)]
    choice = run.meta.get("loss_choice")
    judged, reason = judgement(run.name, choice, findings, skipped)
    if (rl := rl_common.judgement(run, skipped)) is not None and (rl[0] or not judged):
        judged, reason = rl  # an RL run is judged on its rl/ series, not on a loss (issue 20)
    return RunSummary(
        name=info.name,
        path=info.path,
        format=info.format,
        steps=(min(steps), max(steps)) if steps else None,
        metrics=tuple(sorted(run.series)),
        warnings=tuple(info.warnings),
        mapping=tuple(info.mapping),
        loss=choice.to_dict() if choice is not None else None,
        judged=judged,
        judged_reason=reason,
        config=run.meta.get("run_config"),
        diagnosis=diagnosis if judged else None,
    )


def judgement(
    run: str, choice: Any, findings: Sequence[Any], skipped: Sequence[Any]
) -> tuple[bool, str]:
    """Whether a run was judged, and on what (or why not). A run is judged when the loss checks
    ran on a loss series, or when another signal produced a finding (a log of DeepSpeed overflow
    lines alone is evidence); never when every loss check was skipped and nothing was found."""
    loss_skip = next((s for s in skipped if s.run == run and s.kind == "loss-spike"), None)
    if choice is not None and loss_skip is None:
        return True, f"judged on {choice.metric} ({choice.why})"
    mine = [f for f in findings if f.run == run]
    if mine:
        on = ", ".join(sorted({f.metric for f in mine}))
        return True, f"judged on {on} only: " + (
            loss_skip.reason if loss_skip else "no loss series"
        )
    if loss_skip is not None and choice is not None:
        return False, f"not judged: {loss_skip.reason}"
    return False, (
        "not judged: no loss series found (neither a training nor a validation loss); "
        "name one with --map train/loss=SERIES"
    )
