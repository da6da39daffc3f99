"""The reader layer: log files and directories -> one MetricsTable + what was found and how.

``load`` walks the given paths, groups files into runs (one verdict per run: an HF output dir with
its checkpoint copies is one run, so is a directory of event files from a resumed job), reads each
group with its format's reader, maps raw series names to canonical ones (aliases.py), marks
restarts, and gives every run a unique name. Bad files inside a directory become ``errors``; the
good ones still load.

Which files form one run and what runs are called: runs.py. Which formats exist, how each is
recognised and read: registry.py. ``--format`` forces the reader for explicit files; in a
directory walk it reads only files of that format's family (csv <-> lightning-csv, jsonl <->
hf-trainer-state).
"""

from __future__ import annotations

import bisect
import functools
import heapq
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from stabdiag import gcpause
from stabdiag import table as T
from stabdiag.errors import ConfigError, RemotePathError, SourceError, remote_url
from stabdiag.safetext import printable
from stabdiag.sources import aliases, configs, registry, restarts, runs, sniff
from stabdiag.sources.raw import RawRun
from stabdiag.sources.registry import FORMATS

__all__ = ["FORMATS", "LoadResult", "RunInfo", "load"]


@dataclass(frozen=True)
class RunInfo:
    """One run as read: its name, where and in which format it was found, the damage in its input,
    and how each raw series was mapped to a canonical metric (and why)."""

    name: str
    path: str
    format: str
    warnings: tuple[str, ...] = ()
    mapping: tuple[tuple[str, str, str], ...] = ()  # (raw series, metric taken as, why)
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadResult:
    """What reading a set of paths gave: one table of every run's metrics, the runs, and the
    inputs that could not be read at all (one line each)."""

    table: T.MetricsTable
    runs: tuple[RunInfo, ...]
    errors: tuple[str, ...]
    # Each run's rows as its own table, in ``runs`` order (a contiguous row range of ``table``,
    # cut on demand): analysis takes runs from these instead of grouping ``table`` again.
    parts: Sequence[T.RowRange] = field(default=(), repr=False, compare=False)
    # What ``load(then=...)`` gave for each run, in ``runs`` order (None: not computed in a
    # worker); empty without ``then``.
    done: Sequence[Any] = field(default=(), repr=False, compare=False)


def load(
    paths: Sequence[str | Path],
    fmt: str | None = None,
    overrides: Mapping[str, str] | None = None,
    *,
    pool: Executor | None = None,
    cache: bool = True,
    then: Callable[[Sequence[tuple[RunInfo, T.RunData]]], Sequence[Any]] | None = None,
) -> LoadResult:
    """Read every run under ``paths``. A named path that cannot be read (missing, a remote URL, a
    FIFO, a file of no known format or one its reader rejects, a directory with no logs) is
    reported in ``errors``, first, and the other paths are still read, as bad files inside a
    directory are; SourceError is raised only when nothing at all could be read.

    With a process ``pool`` and at least PARALLEL_MIN_GROUPS runs, runs are read in its workers
    (same result: only the reading moves, naming and mapping stay here). ``cache=False`` parses
    every file again (the flag travels with each run to the worker that reads it).

    ``then([(info, run), ...])``: applied in the worker that read them to the runs it read (one
    result per run; picklable; the runs still under their base names), the results in
    ``LoadResult.done``; analysis judges there, so a run's series never travel between
    processes. Runs read here get None."""
    if fmt is not None and fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    groups: list[runs.RunGroup] = []
    explicit: set[Path] = set()
    seen: set[str] = set()  # real paths: a file named twice (explicitly, in a dir) is read once
    unread: list[SourceError] = []  # named paths that cannot be read: the others are still read
    unwalked: list[
        SourceError
    ] = []  # subdirectories that could not be listed (reported, not fatal)
    for p in map(Path, paths):
        if not p.exists():
            url = remote_url(p)
            unread.append(
                RemotePathError(url)
                if url
                else SourceError(p, "a log file or directory", "nothing at that path")
            )
            continue
        what = sniff.special(p)
        if what is not None:
            unread.append(SourceError(p, "a log file or directory", what))
            continue
        if p.is_file():
            denied = _cannot_open(p)
            if denied is not None:
                unread.append(SourceError(p, "a readable log file", denied))
                continue
            f = fmt or sniff.sniff(p)
            if f is None:
                found = (
                    "a checkpoint/binary file (never opened)"
                    if sniff.is_skipped(p)
                    else "a file of unknown format"
                )
                unread.append(SourceError(p, f"a metrics log ({', '.join(FORMATS)})", found))
                continue
            explicit.add(p)
            real = os.path.realpath(p)
            if real not in seen:
                seen.add(real)
                groups += runs.plan([(p, f)])
        else:
            root_denied: list[SourceError] = []

            def unlisted(
                d: Path, exc: OSError, p: Path = p, root_denied: list = root_denied
            ) -> None:
                err = SourceError(d, "a readable directory", f"{exc.strerror or exc}; not searched")
                (root_denied if d == p else unwalked).append(err)

            walked = list(sniff.walk_real(p, on_error=unlisted))
            unread += root_denied
            # files seen under an earlier path are skipped; within one walk all are kept
            todo = [f for f, real in walked if real not in seen]
            found = list(zip(todo, _sniff_all(todo, pool), strict=True))
            seen.update(real for _, real in walked)
            if not root_denied and len(found) == len(walked) and all(k is None for _, k in found):
                unread.append(
                    SourceError(
                        p,
                        "a directory of training logs (`stabdiag formats` lists them)",
                        "no log file in it",
                    )
                )
            groups += runs.plan(
                [
                    (f, fmt or k)
                    for f, k in found
                    if k is not None and (fmt is None or k in registry.BY_NAME[fmt].family)
                ]
            )
    names_in = functools.lru_cache(maxsize=None)(configs.dir_names)  # one listing per directory
    if not cache:
        groups = [replace(g, use_cache=False) for g in groups]
    raws: list[tuple[Any, runs.RunGroup]] = []  # (RawRun, or a worker's _Finished), group
    errors: list[SourceError] = list(unwalked)
    if pool is not None and len(groups) >= PARALLEL_MIN_GROUPS:
        k = _chunk_size(len(groups), pool)
        chunks = [groups[i : i + k] for i in range(0, len(groups), k)]
        task = functools.partial(_read_finish, overrides=overrides, then=then)
        done = [got for batch in pool.map(task, chunks) for got in _unpack(batch)]
    else:
        done = [None] * len(groups)
    for g, got in zip(groups, done, strict=True):
        if isinstance(got, list):
            raws += [(r, g) for r in got]
            continue
        try:
            raws += [
                (r, g) for r in registry.read(g)
            ]  # serially, or again to raise the real exception
        except SourceError as exc:
            (unread if set(g.files) & explicit else errors).append(exc)
        except Exception as exc:  # noqa: BLE001 - a reader bug on damaged input sinks only its run
            err = SourceError(
                g.files[0],
                f"a readable {g.fmt} log",
                f"content its reader could not handle ({type(exc).__name__}: {str(exc)[:200]})",
            )
            (unread if set(g.files) & explicit else errors).append(err)
    if unread and not raws:  # nothing could be read: the first named path is the error
        first = unread[0]
        if len(unread) > 1:
            first.args = (f"{first}; also unreadable: {', '.join(e.path for e in unread[1:])}",)
        raise first
    errors = [*unread, *errors]
    names = runs.unique_names(raws)
    cols, infos, results = [], [], []
    scaler_of = functools.lru_cache(maxsize=None)(_scaler_file)  # one look per directory
    for (raw, g), name in zip(raws, names, strict=True):
        if isinstance(raw, _Finished):  # finished in a worker under its base name: renamed
            (c, info), res = raw.named(name), raw.result
        else:
            c, info = _finish(raw, g, name, overrides, scaler_of, names_in)
            res = None
        cols.append(c)
        infos.append(info)
        results.append((info, res))
    cols, infos = _merge_same_run(cols, infos)
    # a run merged with its copy is no longer what the worker saw: its result is dropped
    kept = {id(i): r for i, r in results}
    done_runs = tuple(kept.get(id(i)) for i in infos) if then is not None else ()
    table, bounds = _table(cols)
    return LoadResult(
        table, tuple(infos), tuple(map(str, errors)), _Parts(table, bounds), done_runs
    )


# --------------------------------------------------------------------------- reading

PARALLEL_MIN_GROUPS = 8  # fewer runs are read in-process: worker start-up would dominate


class _Finished(NamedTuple):
    """One run read and finished in a worker under its base name (``name``: unique names need
    every run, so the parent names it), with what ``then`` made of it. Plain fields, not the
    frozen dataclasses: a result crosses processes for every run, and rebuilding a _Cols and a
    RunInfo under the final name costs less than pickling and ``replace``-ing them."""

    name: str
    cols: tuple  # _Cols fields after ``run``, ``names`` as a tuple (in transit: see _pack)
    info: tuple  # RunInfo fields after ``name``
    result: Any

    def named(self, name: str) -> tuple[_Cols, RunInfo]:
        step, code, names, *rest = self.cols
        return _Cols(name, step, code, np.asarray(names, dtype=object), *rest), RunInfo(
            name, *self.info
        )


_Batch = tuple  # (per group: list[_Finished] | None, (step, code, value, wall) of every run)


def _chunk_size(n: int, pool: Executor, most: int = 1000) -> int:
    """Items per task: four tasks a worker at least (the slowest one ends the wait), and at most
    ``most``, so the last task does not keep the other workers idle for long (on 100,000 runs,
    eight tasks of 12,500 left a worker idle for seconds at the end)."""
    return max(1, min(most, -(-n // (4 * getattr(pool, "jobs", 2)))))


PARALLEL_MIN_SNIFF = 2000  # files: below this, sniffing them here beats sending them out


def _sniff_all(files: Sequence[Path], pool: Executor | None) -> list[str | None]:
    """Each file's format (``sniff.sniff``), in a process pool when there are many: a look at
    every file's head was a twentieth of analysing 100,000 small files, all of it in the parent
    before any worker could start (issue 13 R4)."""
    if pool is None or len(files) < PARALLEL_MIN_SNIFF:
        return [sniff.sniff(f) for f in files]
    k = _chunk_size(len(files), pool, most=5000)
    chunks = [[str(f) for f in files[i : i + k]] for i in range(0, len(files), k)]
    return [kind for part in pool.map(_sniff_chunk, chunks) for kind in part]


def _sniff_chunk(paths: Sequence[str]) -> list[str | None]:
    return [sniff.sniff(Path(p)) for p in paths]


def _read_finish(
    groups: Sequence[runs.RunGroup],
    overrides: Mapping[str, str] | None,
    then: Callable[[Sequence[tuple[RunInfo, T.RunData]]], Sequence[Any]] | None,
) -> _Batch:
    """Read and finish each group in a worker process, then apply ``then`` to all its runs at
    once. None for a group that raised while read: the parent reads it again and says why; a
    ``then`` that raised leaves every result None (the parent judges those runs itself).

    Finishing here, not in the parent, keeps the parent's share of a run to naming it: on 10,000
    small files the parent's serial finishing was most of the load (issue 13 R4). All runs are
    read first and judged after, as serial analysis does: reading and judging by turns cost the
    workers a quarter more. The runs' arrays travel joined (``_pack``): four small arrays a run
    cost more to pickle than to read."""
    scaler_of = functools.lru_cache(maxsize=None)(_scaler_file)
    names_in = functools.lru_cache(maxsize=None)(configs.dir_names)
    out: list[list[tuple[str, _Cols, RunInfo]] | None] = []
    with gcpause.paused():  # a batch keeps all it makes: a collection would free nothing
        for g in groups:
            try:
                out.append(
                    [
                        (raw.name, *_finish(raw, g, raw.name, overrides, scaler_of, names_in))
                        for raw in registry.read(g)
                    ]
                )
            except Exception:  # noqa: BLE001 - SourceError or a reader bug: the parent reads it again
                out.append(None)
        read = [r for got in out if got is not None for r in got]
        results: Sequence[Any] = [None] * len(read)
        if then is not None and read:
            try:
                # each judged under a name of its own: its base name unless another run here has
                # it too (the parent renames what differs from the final name)
                seen = Counter(name for name, _, _ in read)
                results = then(
                    [
                        (info, c.run_data(info.meta, name if seen[name] == 1 else f"#{i}"))
                        for i, (name, c, info) in enumerate(read)
                    ]
                )
            except Exception:  # noqa: BLE001 - a judging bug: the parent judges these runs again
                results = [None] * len(read)
    cols = [c for _, c, _ in read]
    k = iter(range(len(read)))
    sent = [
        None
        if got is None
        else [
            _Finished(
                name,
                (i := next(k), c.code.dtype.str, tuple(c.names), c.sources, c.rank),
                (info.path, info.format, info.warnings, info.mapping, info.meta),
                results[i],
            )
            for name, c, info in got
        ]
        for got in out
    ]
    return sent, _pack(cols)


def _pack(cols: Sequence[_Cols]) -> tuple[np.ndarray, ...]:
    """Step, code, value and wall time of every run, each joined into one array, and where each
    run ends in them."""
    ends = np.cumsum([len(c) for c in cols], dtype=np.int64)
    if not cols:
        return ends, *(np.empty(0, dt) for dt in (np.int64, np.int64, np.float64, np.float64))
    joined = (
        np.concatenate([getattr(c, f) for c in cols]) for f in ("step", "code", "value", "wall")
    )
    return ends, *joined


def _unpack(batch: _Batch) -> list[list[_Finished] | None]:
    """The parent's side of ``_read_finish``: each run's arrays as views of the joined ones."""
    groups, (ends, step, code, value, wall) = batch
    bounds = np.concatenate(([0], ends)).tolist()
    out: list[list[_Finished] | None] = []
    for got in groups:
        if got is None:
            out.append(None)
            continue
        whole = []
        for name, (i, dtype, names, srcs, rank), info, result in got:
            a, b = bounds[i], bounds[i + 1]
            c = code[a:b] if code.dtype.str == dtype else code[a:b].astype(dtype)
            whole.append(
                _Finished(
                    name, (step[a:b], c, names, value[a:b], wall[a:b], srcs, rank), info, result
                )
            )
        out.append(whole)
    return out


def _cannot_open(path: Path) -> str | None:
    """Why a file named on the command line cannot be opened for reading (None: it can). Asked
    of the file itself (not os.access), so it holds for root and for ACLs alike."""
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


# --------------------------------------------------------------------------- finishing


def _finish(
    raw: RawRun,
    g: runs.RunGroup,
    name: str,
    overrides: Mapping[str, str] | None,
    scaler_of: Callable[[Path], Path | None],
    names_in: configs.NamesIn | None = None,
) -> tuple[_Cols, RunInfo]:
    matches = aliases.resolve_shared(raw.names, raw.context, overrides)
    mapped = [printable(matches[n].name) for n in raw.names]  # unknown names are log-derived
    per_step = np.array([T.is_canonical(m) for m in mapped], dtype=bool)
    warnings = [printable(w) for w in (*g.notes, *raw.warnings)]
    if not len(raw):
        warnings.append(f"{printable(raw.path)}: no metric values found")

    rank = raw.rank
    found = []  # (index, rank or None, Restart)
    for r in np.unique(rank) if rank is not None else [None]:
        sel = np.flatnonzero(rank == r) if r is not None else None
        codes = raw.codes if sel is None else raw.codes[sel]
        steps = raw.steps if sel is None else raw.steps[sel]
        for rs in restarts.find(codes, steps, per_step):
            idx = rs.index if sel is None else int(sel[rs.index])
            found.append((idx, r, rs))
            where = "" if r is None else f" (rank {r})"
            warnings.append(
                f"restart{where}: steps go back from {rs.prev_max} to {rs.step}; "
                "later-written values win"
            )

    n = len(raw)
    codes = raw.codes
    steps, values = raw.steps, raw.values
    wall = raw.wall_time if raw.wall_time is not None else np.full(n, np.nan)
    if found:  # insert the meta/restart rows where the rewind happened (keeps write order)
        at = np.array([i for i, _, _ in found], dtype=np.int64)
        codes = np.insert(codes, at, len(mapped))
        steps = np.insert(steps, at, [rs.step for _, _, rs in found])
        values = np.insert(values, at, [float(rs.prev_max) for _, _, rs in found])
        wall = np.insert(wall, at, np.nan)
        if rank is not None:
            rank = np.insert(rank, at, [r for _, r, _ in found])
    # Two raw names may map to one metric: codes in first-seen order, as pd.factorize gives
    # them (a dict: pd.factorize costs ~40 us a run, a second for 100,000 small runs).
    index: dict[str, int] = {}
    lut = [index.setdefault(m, len(index)) for m in (*mapped, T.RESTART)]
    metric_codes = np.array(lut, dtype=T.code_dtype(len(index)))  # a byte a row, mostly
    metric_names = list(index)
    cols = _Cols(
        name,
        steps.astype(np.int64, copy=False),
        metric_codes[codes],
        np.asarray(metric_names, dtype=object),
        values.astype(np.float64, copy=False),
        wall.astype(np.float64, copy=False),
        ((printable(raw.path), len(steps)),),
        None if rank is None else np.asarray(rank),
    )
    derived = raw.meta.get("derived")
    derived = derived if isinstance(derived, Mapping) else {}

    def why(raw_name: str) -> str:
        # A reader that computed or named a series itself says how (e.g. val/loss = ln(ppl)).
        m = matches[raw_name]
        told = derived.get(raw_name)
        return str(told) if told and m.rank >= 0 and m.name == raw_name else m.why

    mapping = tuple(
        (printable(raw_name), printable(matches[raw_name].name), printable(why(raw_name)))
        for raw_name in raw.names
    )
    meta = dict(raw.meta)
    if "precision" not in meta:
        hint = _precision_hint(raw, mapped, g, scaler_of)
        if hint is not None:
            meta["precision"], meta["precision_evidence"] = hint
    meta["run_config"] = configs.read_safely(
        g.path if g.fmt == registry.TENSORBOARD else raw.path, raw.format, meta, g.files, names_in
    )
    info = RunInfo(
        name=name,
        path=printable(raw.path if g.fmt != registry.TENSORBOARD else g.path),
        format=raw.format,
        warnings=tuple(warnings),
        mapping=mapping,
        meta=meta,
    )
    return cols, info


@dataclass(frozen=True)
class _Cols:
    """One run's rows as plain arrays. The DataFrame is built once for all runs: a frame per run
    cost milliseconds each, minutes for 100,000 small runs (issue 13 R4)."""

    run: str
    step: np.ndarray  # int64
    code: np.ndarray  # int: index into ``names`` per row
    names: np.ndarray  # object: the run's metric names (canonical or escaped raw), unique
    value: np.ndarray  # float64
    wall: np.ndarray  # float64
    sources: tuple[tuple[str, int], ...]  # (file, rows) in row order
    rank: np.ndarray | None = None  # int64, or float64 with NaN after a merge

    def __len__(self) -> int:
        return len(self.step)

    def run_data(self, meta: Mapping[str, Any], name: str | None = None) -> T.RunData:
        """The run cut into series, as ``LoadResult.parts`` cuts it from the table (under
        ``name`` when given)."""
        name = self.run if name is None else name
        if self.rank is None:
            return T.RunData(
                name, T.split_codes(self.code, self.names, self.step, self.value), meta=dict(meta)
            )
        return replace(_table([self])[0].run_data(self.run, meta), name=name)

    def metric_is(self, flags: Callable[[str], bool]) -> np.ndarray:
        """Per row: ``flags(metric name)``, evaluated once per name."""
        return (
            np.array([flags(n) for n in self.names], dtype=bool)[self.code]
            if len(self.names)
            else np.zeros(len(self), dtype=bool)
        )


def _table(cols: Sequence[_Cols]) -> tuple[T.MetricsTable, list[tuple[int, int]]]:
    """All runs' rows as one MetricsTable (runs in order) and each run's row range in it.

    Names are categoricals (a small code per row): a str column holds a copy of the run name, the
    series name and the path in every row, 70 bytes a value (issue 13 R3)."""
    ends = np.cumsum([len(c) for c in cols], dtype=np.int64).tolist()
    bounds = list(zip([0, *ends][:-1], ends, strict=True))  # no run read: no bounds
    full = [c for c in cols if len(c)]
    if not full:
        return T.MetricsTable.empty(), bounds
    sizes = [len(c) for c in full]
    # Codes are made in the type the categoricals keep (a byte a row for most tables) and one
    # run's arrays go into the frame as they are: int64 codes and copies of every column cost
    # 60 bytes a value at the peak (issue 13 R3).
    index: dict[str, int] = {}
    luts = [[index.setdefault(n, len(index)) for n in c.names] for c in full]
    small = T.code_dtype(len(index))
    metric_codes = [np.array(lut, dtype=small)[c.code] for lut, c in zip(luts, full, strict=True)]
    src_index: dict[str, int] = {}
    src_ids = [[src_index.setdefault(p, len(src_index)) for p, _ in c.sources] for c in full]
    small = T.code_dtype(len(src_index))
    src_codes = [
        np.repeat(np.array(ids, dtype=small), [k for _, k in c.sources])
        for ids, c in zip(src_ids, full, strict=True)
    ]
    run_codes = np.repeat(np.arange(len(full), dtype=T.code_dtype(len(full))), sizes)
    frame: dict[str, Any] = {
        "run": _categorical(run_codes, [c.run for c in full]),
        "step": _join([c.step for c in full]),
        "metric": _categorical(_join(metric_codes), list(index)),
        "value": _join([c.value for c in full]),
        "wall_time": _join([c.wall for c in full]),
        "source": _categorical(_join(src_codes), list(src_index)),
    }
    ranked = [c.rank is not None for c in full]
    if all(ranked) and all(c.rank.dtype.kind in "iu" for c in full):
        frame["rank"] = _join([c.rank for c in full])
    elif any(ranked):  # as pd.concat does: runs without ranks get NaN
        frame["rank"] = np.concatenate(
            [np.full(len(c), np.nan) if c.rank is None else c.rank.astype(np.float64) for c in full]
        )
    return T.MetricsTable(pd.DataFrame(frame, copy=False)), bounds


def _join(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """One array of them all; a single one as it is (np.concatenate would copy it)."""
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _categorical(codes: np.ndarray, names: Sequence[str]) -> pd.Categorical:
    if len(set(names)) != len(names):  # run names are unique; anything else: factorize
        values = np.asarray(names, dtype=object)[codes]
        return pd.Categorical(values)
    small = T.code_dtype(len(names))  # what pandas keeps
    return pd.Categorical.from_codes(codes.astype(small, copy=False), pd.Index(names, dtype=object))


class _Parts(Sequence):
    """Each run's rows as its own row range of the one table, in ``runs`` order (``T.RowRange``:
    plain column arrays, cut into series without a frame per run), made on first use."""

    def __init__(self, table: T.MetricsTable, bounds: Sequence[tuple[int, int]]) -> None:
        self._table, self._bounds = table, list(bounds)
        self._ranges: list[T.RowRange] | None = None

    def __len__(self) -> int:
        return len(self._bounds)

    def __getitem__(self, i):  # noqa: ANN001, ANN204 - Sequence protocol (int or slice)
        if self._ranges is None:
            self._ranges = T.row_ranges(self._table, self._bounds)
        return self._ranges[i]


# --------------------------------------------------------------------------- one run, two loggers

# Which copy of a run logged twice is kept: exact text/JSON values over TensorBoard's float32.
_KEEP_ORDER = (
    registry.HF_TRAINER_STATE,
    registry.LIGHTNING_CSV,
    registry.CSV,
    registry.JSONL,
    registry.MLFLOW,
    registry.WANDB_OFFLINE,
    registry.WANDB_CSV,
    *registry.STDOUT_FORMATS,
    registry.TENSORBOARD,
)
_SAME_MIN_POINTS = 5


def _canonical_mask(c: _Cols) -> np.ndarray:
    """The rows of canonical per-step metrics (lowest rank) of one run."""
    keep = c.metric_is(lambda m: T.is_canonical(m) and m != T.RESTART)
    if c.rank is not None:
        r = c.rank.astype(np.float64)
        ok = keep & ~np.isnan(r)
        if ok.any():
            keep &= np.isnan(r) | (r == r[ok].min())
    return keep


# The series that tells runs apart (a constant LR or loss scale does not): first found wins.
_TELLING = (T.TRAIN_LOSS, T.VAL_LOSS, T.GRAD_NORM, T.PARAM_NORM, T.UPDATE_RATIO)


def _telling(c: _Cols) -> tuple[str, np.ndarray, np.ndarray] | None:
    """(metric, steps, values) of the run's telling series, in step order."""
    mask = _canonical_mask(c)
    for m in _TELLING:
        sel = mask & c.metric_is(lambda n, m=m: n == m)
        if sel.any():
            steps = c.step[sel]
            order = np.argsort(steps, kind="stable")
            return m, steps[order], c.value[sel][order]
    return None


def _first_key(tell: tuple[str, np.ndarray, np.ndarray] | None) -> tuple | None:
    """The telling series' first three points at float32 precision: runs logged twice share them."""
    if tell is None:
        return None
    m, steps, values = tell
    with np.errstate(over="ignore"):  # beyond float32's range: inf, no warning on stderr
        return (
            m,
            *(
                (int(s), float(np.float32(v)) if np.isfinite(v) else repr(v))
                for s, v in zip(steps[:3], values[:3], strict=True)
            ),
        )


def _quick_same(
    a: tuple[str, np.ndarray, np.ndarray], b: tuple[str, np.ndarray, np.ndarray]
) -> bool:
    """The first 64 shared points of the telling series agree (rejects most pairs cheaply)."""
    _, sa, va = a
    _, sb, vb = b
    common, ia, ib = np.intersect1d(sa[:256], sb[:256], return_indices=True)
    if not len(common):
        return False
    return bool(np.all(np.isclose(va[ia[:64]], vb[ib[:64]], rtol=1e-6, atol=0.0, equal_nan=True)))


def _fingerprint(c: _Cols) -> dict[tuple[str, int], float]:
    """(canonical metric, step) -> value (lowest rank, last written) of one run."""
    mask = _canonical_mask(c)
    return dict(
        zip(
            zip(c.names[c.code[mask]].tolist(), c.step[mask].tolist(), strict=True),
            c.value[mask].tolist(),
            strict=True,
        )
    )


def _same_values(a: dict, b: dict) -> int:
    """How many points two runs share when every shared point agrees (at float32 precision, NaN
    equal to NaN) and they cover at least half of the smaller run's points; else 0."""
    metrics = {m for m, _ in a} & {m for m, _ in b}
    a = {k: v for k, v in a.items() if k[0] in metrics}
    b = {k: v for k, v in b.items() if k[0] in metrics}
    shared = a.keys() & b.keys()
    if len(shared) < max(_SAME_MIN_POINTS, 0.5 * min(len(a), len(b))):
        return 0
    x = np.array([a[k] for k in shared], dtype=np.float64)
    y = np.array([b[k] for k in shared], dtype=np.float64)
    return len(shared) if bool(np.all(np.isclose(x, y, rtol=1e-6, atol=0.0, equal_nan=True))) else 0


class _Growth:
    """A kept run with the selected rows of its copies after its own, in merge order, joined once
    at the end: what appending copy by copy gives (names in first-seen order, each copy's rows
    and source, ranks NaN where a piece had none, int while every piece is int), without copying
    the growing run again for each copy (quadratic when one run absorbs thousands of identical
    copies: issue 13 R4)."""

    def __init__(self, keep: _Cols) -> None:
        self.keep = keep
        self.names = list(keep.names)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.kept = set(keep.names[np.unique(keep.code)].tolist())  # names that have rows
        self.pieces: list[tuple] = [(keep.step, keep.code, keep.value, keep.wall, keep.rank)]
        self.sizes = [len(keep)]
        self.sources = list(keep.sources)
        self.rank_dtype = None if keep.rank is None else keep.rank.dtype
        self.notes: list[str] = []
        self.mapping: list[tuple[str, str, str]] = []

    def add(self, extra: _Cols, sel: np.ndarray) -> None:
        for n in extra.names:
            if n not in self.index:
                self.index[n] = len(self.names)
                self.names.append(n)
        lut = np.array([self.index[n] for n in extra.names], dtype=np.int64)
        rank = None if extra.rank is None else extra.rank[sel]
        if self.rank_dtype is not None or rank is not None:
            a = self.rank_dtype if self.rank_dtype is not None else np.dtype(np.float64)
            b = rank.dtype if rank is not None else np.dtype(np.float64)
            both_int = a.kind in "iu" and b.kind in "iu"
            self.rank_dtype = np.result_type(a, b) if both_int else np.dtype(np.float64)
        self.pieces.append(
            (extra.step[sel], lut[extra.code[sel]], extra.value[sel], extra.wall[sel], rank)
        )
        k = int(sel.sum())
        self.sizes.append(k)
        ((path, _),) = extra.sources  # a dropped run is always an original, unmerged one
        self.sources.append((path, k))

    def cols(self) -> _Cols:
        step, code, value, wall, ranks = zip(*self.pieces, strict=True)
        rank = None
        if self.rank_dtype is not None:
            rank = np.concatenate(
                [
                    np.full(n, np.nan) if r is None else r.astype(self.rank_dtype, copy=False)
                    for r, n in zip(ranks, self.sizes, strict=True)
                ]
            )
        return _Cols(
            self.keep.run,
            np.concatenate(step),
            np.concatenate(code),
            np.asarray(self.names, dtype=object),
            np.concatenate(value),
            np.concatenate(wall),
            tuple(self.sources),
            rank,
        )


def _merge_same_run(cols: list[_Cols], infos: list[RunInfo]) -> tuple[list[_Cols], list[RunInfo]]:
    """One verdict per run: the same run written by two loggers (Lightning TensorBoardLogger +
    CSVLogger, which even pick different ``version_N`` dirs; an HF TensorBoard mirror kept outside
    the output dir) becomes one run. Two runs of different formats are the same run when every
    value they share (canonical metric, step) is identical and they share most of their points.
    The exact copy (text/JSON over TensorBoard's float32) is kept; series only the other copy
    has are added to it, and a warning says what was merged."""
    if len({i.format for i in infos}) < 2:
        return cols, infos
    # candidates: runs that share one of their first points (cheap; avoids comparing all pairs)
    tells = [_telling(c) for c in cols]
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for i, tell in enumerate(tells):
        key = _first_key(tell)
        if key is not None:
            buckets[key].append(i)
    prints: dict[int, dict] = {}
    gone: dict[int, tuple[int, int]] = {}  # dropped run -> (kept run, shared points)
    for members in buckets.values():
        for a, b in _pairs(members, [infos[i].format for i in members], gone):
            if not _quick_same(tells[a], tells[b]):
                continue
            for i in (a, b):
                if i not in prints:
                    prints[i] = _fingerprint(cols[i])
            n = _same_values(prints[a], prints[b])
            if not n:
                continue
            rank = {
                i: _KEEP_ORDER.index(infos[i].format)
                if infos[i].format in _KEEP_ORDER
                else len(_KEEP_ORDER)
                for i in (a, b)
            }
            keep, drop = (a, b) if rank[a] <= rank[b] else (b, a)
            gone[drop] = (keep, n)
    if not gone:
        return cols, infos
    grown: dict[int, _Growth] = {}
    for drop, (keep, n) in gone.items():
        into = grown.get(keep)
        if into is None:
            into = grown[keep] = _Growth(cols[keep])
        sel = cols[drop].metric_is(lambda m, kept=into.kept: m not in kept)
        extra = set(cols[drop].names[np.unique(cols[drop].code[sel])].tolist())
        into.notes.append(
            f"{infos[drop].path} ({infos[drop].format}) is the same run as {infos[keep].path} "
            f"({infos[keep].format}): all {n} shared values are identical; read once"
            + (f", its {len(extra)} other series added" if sel.any() else "")
        )
        into.mapping += [m for m in infos[drop].mapping if m[1] in extra]
        into.add(cols[drop], sel)
        into.kept |= extra
    out_c, out_i = list(cols), list(infos)
    for keep, into in grown.items():
        out_c[keep] = into.cols()
        out_i[keep] = replace(
            infos[keep],
            warnings=infos[keep].warnings + tuple(into.notes),
            mapping=infos[keep].mapping + tuple(into.mapping),
        )
    order = [i for i in range(len(infos)) if i not in gone]
    return [out_c[i] for i in order], [out_i[i] for i in order]


def _pairs(members: list[int], fmts: list[str], gone: Mapping[int, Any]) -> Iterator[tuple]:
    """The pairs (a, b) of one bucket that the merge compares, in the order of comparing every
    pair (a before b in ``members``): both still kept (``gone`` grows as pairs merge) and of
    different formats. Only such pairs are visited: looping over every pair cost minutes for
    tens of thousands of runs sharing their first points (issue 13 R4)."""
    alive: dict[str, list[int]] = defaultdict(list)  # per format: positions not yet gone
    for pos, f in enumerate(fmts):
        alive[f].append(pos)
    if len(alive) < 2:
        return
    for ia, a in enumerate(members):
        if a in gone:
            continue
        tails = []
        for f, ps in alive.items():
            if f != fmts[ia]:
                ps[:] = [p for p in ps if members[p] not in gone]
                tails.append(ps[bisect.bisect_right(ps, ia) :])
        for ib in heapq.merge(*tails):
            if a in gone:  # a merged into an earlier b: no later pair of a counts
                break
            if members[ib] not in gone:
                yield a, members[ib]


# --------------------------------------------------------------------------- precision hint


def _precision_hint(
    raw: RawRun,
    mapped: Sequence[str],
    g: runs.RunGroup,
    scaler_of: Callable[[Path], Path | None] | None = None,
) -> tuple[str, str] | None:
    """('fp16', evidence) when the run shows a dynamic loss scaler, else None.

    Detectors read it as ``RunData.meta['precision']`` (evidence in ``meta['precision_evidence']``):
    only fp16 needs a loss scaler, so a loss-scale series with a value other than 1 (Megatron
    prints 1.0 in bf16/fp32 runs) or an HF ``scaler.pt`` beside the checkpoints says fp16. The
    scaler file is recognised by its name and never opened."""
    for code, metric in enumerate(mapped):
        if metric != T.LOSS_SCALE and not metric.endswith("/loss_scale"):
            continue
        v = raw.values[raw.codes == code]
        v = v[np.isfinite(v) & (v > 0)]
        if v.size and np.any(v != 1.0):
            return "fp16", (
                f"dynamic loss scale in the log ('{raw.names[code]}': {v.size} values, "
                f"{v.min():g} to {v.max():g})"
            )
    scaler = (scaler_of or _scaler_file)(g.path if g.path.is_dir() else g.path.parent)
    if scaler is not None:
        return "fp16", f"{scaler} (a GradScaler state beside the checkpoints; not opened)"
    return None


def _scaler_file(run_dir: Path) -> Path | None:
    """``scaler.pt`` in the run dir or one of its ``checkpoint-*`` dirs (HF Trainer with fp16)."""
    try:
        if (run_dir / "scaler.pt").is_file():
            return run_dir / "scaler.pt"
        for d in sorted(os.scandir(run_dir), key=lambda e: e.name):
            if (
                d.name.startswith("checkpoint")
                and d.is_dir()
                and Path(d.path, "scaler.pt").is_file()
            ):
                return Path(d.path, "scaler.pt")
    except OSError:
        return None
    return None
