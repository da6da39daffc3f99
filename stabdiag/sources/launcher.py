"""Logs written through a launcher: one run with a ``rank`` per process, whatever the inner format.

torchrun (torch.distributed.elastic) leaves a job's output in two shapes (research/formats.md
section 11, item 5):

- ``--tee 3`` (or ``--redirects`` without a log dir): every line of every local rank on the
  launcher's console with a ``[default3]:`` (older) or ``[rank3]:`` (newer) prefix, the ranks'
  lines interleaved in arrival order, in whatever file the user sent the console to
  (``train.log``, ``out.txt``, ``slurm-1.out``).
- ``--log-dir DIR`` with redirects: ``DIR/<run_id>/attempt_<N>/<local_rank>/stdout.log`` and
  ``stderr.log`` (a new ``attempt_<N>`` after each elastic restart).

Either way the inner lines are the trainer's own stdout (Megatron, HF Trainer, nanoGPT, llm.c,
torchtitan, ...), so this module only regroups lines by rank and hands each rank's text to the
unchanged per-format reader; the results are joined into one RawRun whose ``rank`` array says
which process wrote each value. That is what the rank-divergence detector compares. When every
rank printed exactly the same values (an all-reduced loss), they are kept once, without ranks.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from stabdiag.sources import textlog
from stabdiag.sources.raw import RawRun

LOG_DIR = "torchrun-log-dir"  # grouping key for --log-dir layouts (each file keeps its own format)

# torchrun's console prefixes; srun's "12: " labels are left to textlog (too easily a false hit).
_TEE = re.compile(r"^\s*(?:\x1b\[[0-9;?]*[A-Za-z])*\[(?:default|rank)(\d+)\]:")
_TEE_BYTES = re.compile(rb"(?m)^\s*\[(?:default|rank)(\d+)\]:")
_ATTEMPT = re.compile(r"^attempt_(\d+)$")
_STREAMS = ("stdout.log", "stderr.log")

Reader = Callable[[Path], list[RawRun]]


def tee_ranks(head: str) -> set[int]:
    """The distinct torchrun rank prefixes in a chunk of text."""
    return {int(m) for m in _TEE_BYTES.findall(head.encode("utf-8", "replace"))}


def strip_tee(text: str) -> str:
    """The text with one torchrun prefix removed from each line (for sniffing the inner format)."""
    return "\n".join(_TEE.sub("", ln, count=1) for ln in text.split("\n"))


def log_dir_entry(path: Path) -> tuple[Path, int, int] | None:
    """(run dir, attempt, local rank) for ``<run>/attempt_N/<rank>/stdout.log|stderr.log``."""
    if path.name not in _STREAMS or not path.parent.name.isdigit():
        return None
    m = _ATTEMPT.match(path.parent.parent.name)
    if m is None:
        return None
    return path.parent.parent.parent, int(m[1]), int(path.parent.name)


def split_tee(text: str) -> tuple[dict[int, str], int]:
    """Each rank's lines (prefix removed) in file order, and how many lines had no prefix."""
    per: dict[int, list[str]] = defaultdict(list)
    other = 0
    for line in text.split("\n"):
        m = _TEE.match(line)
        if m is None:
            other += bool(line.strip())
            continue
        per[int(m[1])].append(line[m.end() :])
    return {r: "\n".join(lines) for r, lines in sorted(per.items())}, other


def _tee_survey(source: textlog.LineView, path: Path) -> tuple[list[int], int, str | None]:
    """One streaming pass: the ranks with a prefix (sorted), how many non-empty lines had none,
    and the whole file's failure warning (the per-rank readers see only their own lines)."""
    ranks: set[int] = set()
    other = 0
    fail: str | None = None
    for number, line in enumerate(source(), start=1):
        m = _TEE.match(line)
        if m is None:
            other += bool(line.strip())
        else:
            ranks.add(int(m[1]))
        if fail is None:
            fail = textlog.failure_at(path, number, line)
    return sorted(ranks), other, fail


def _rank_view(source: textlog.LineView, rank: int) -> textlog.LineView:
    """One rank's lines of a --tee file, prefix removed, read afresh from the file each time
    (what ``split_tee`` gives that rank, without holding it)."""

    def view() -> Iterator[str]:
        for line in source():
            m = _TEE.match(line)
            if m is not None and int(m[1]) == rank:
                yield line[m.end() :]

    return view


def read_tee(path: Path, fmt: str, reader: Reader) -> list[RawRun]:
    """A text log; when it holds the lines of several torchrun ranks, one run with ranks.

    The file is streamed once to find the ranks, then once per rank (each reader sees a view of
    its rank's lines), so memory follows the values kept, never the file."""
    if not tee_ranks(textlog.head(path)):
        return reader(path)
    source = textlog.line_source(path)
    ranks, other, fail = _tee_survey(source, path)  # the other ranks may first speak past the head
    if len(ranks) < 2:
        return reader(path)
    per_rank = {r: _rank_view(source, r) for r in ranks}
    parts: list[tuple[int, RawRun]] = []
    for rank, rank_view in per_rank.items():
        with textlog.virtual_files({path: rank_view}):  # same path: same sniffing, same messages
            runs = reader(path)
        parts += [(rank, _name_rank(r, path, rank)) for r in runs]
    note = (
        f"{path}: torchrun --tee output of {len(per_rank)} ranks "
        f"({', '.join(map(str, per_rank))}) read as one run with a rank per prefix"
        + (f"; {other} lines without a rank prefix (launcher messages) not read" if other else "")
    )
    run = join(
        parts,
        name=textlog.run_name(path),
        path=str(path),
        fmt=fmt,
        launcher="torchrun --tee",
        note=note,
    )
    if fail and fail not in run.warnings:
        run = replace(run, warnings=run.warnings + (fail,))
    return [run]


def read_log_dir(
    run_dir: Path, files: Sequence[tuple[Path, str]], reader_for: Callable[[str], Reader]
) -> RawRun:
    """A torchrun ``--log-dir`` run: attempts in order, each rank's stdout then stderr."""

    def order(item: tuple[Path, str]) -> tuple[int, int, int]:
        _, attempt, rank = log_dir_entry(item[0]) or (run_dir, 0, 0)
        return attempt, rank, _STREAMS.index(item[0].name)

    parts: list[tuple[int, RawRun]] = []
    attempts: set[int] = set()
    fmts: list[str] = []
    for f, fmt in sorted(files, key=order):
        entry = log_dir_entry(f)
        if entry is None:
            continue
        _, attempt, rank = entry
        attempts.add(attempt)
        fmts.append(fmt)
        parts += [(rank, _name_rank(r, f, rank)) for r in reader_for(fmt)(f)]
    ranks = sorted({r for r, _ in parts})
    fmt = max(set(fmts), key=fmts.count) if fmts else LOG_DIR
    note = (
        f"{run_dir}: torchrun --log-dir layout, {len(ranks)} rank(s) "
        f"({', '.join(map(str, ranks))}) in {len(attempts)} attempt(s) read as one run"
    )
    return join(
        parts,
        name=run_dir.name,
        path=str(run_dir),
        fmt=fmt,
        launcher="torchrun --log-dir",
        note=note,
    )


def _name_rank(run: RawRun, path: Path, rank: int) -> RawRun:
    """Say which rank a reader's warnings are about (they name only the file)."""
    p = str(path)
    warns = tuple(
        w.replace(p, f"{p} (rank {rank})", 1) if w.startswith(p) else w for w in run.warnings
    )
    return replace(run, warnings=warns)


def _same_values(runs: Iterable[RawRun]) -> bool:
    runs = list(runs)
    a = runs[0]
    return all(
        b.names == a.names
        and np.array_equal(b.codes, a.codes)
        and np.array_equal(b.steps, a.steps)
        and np.array_equal(b.values, a.values, equal_nan=True)
        for b in runs[1:]
    )


def join(
    parts: Sequence[tuple[int, RawRun]], *, name: str, path: str, fmt: str, launcher: str, note: str
) -> RawRun:
    """Per-rank RawRuns -> one RawRun with a rank array (write order kept within each rank).

    Identical values from every rank are kept once without ranks; one rank alone is kept
    without ranks too (its number goes into ``meta['launcher_rank']``)."""
    filled = [(r, p) for r, p in parts if len(p)]
    ranks = sorted({r for r, _ in filled})
    meta: dict = {"launcher": launcher, "ranks": sorted({r for r, _ in parts})}
    for _, p in parts:
        meta = {**p.meta, **meta}
    warnings = [note]
    for _, p in parts:
        warnings += [w for w in p.warnings if w not in warnings]
    context = next((p.context for _, p in filled), parts[0][1].context if parts else None)
    if len(ranks) <= 1 or (len(filled) == len(ranks) and _same_values(p for _, p in filled)):
        if len(ranks) > 1:
            warnings.append(f"{path}: all {len(ranks)} ranks printed identical values; read once")
        if len(ranks) == 1:
            meta["launcher_rank"] = ranks[0]
        src = next((p for r, p in filled if r == ranks[0]), None) if ranks else None
        if src is None:
            empty = np.zeros(0)
            return RawRun(
                name=name,
                path=path,
                format=fmt,
                names=(),
                codes=empty.astype(np.int32),
                steps=empty.astype(np.int64),
                values=empty,
                warnings=tuple(warnings),
                meta=meta,
                **({"context": context} if context else {}),
            )
        return replace(
            src, name=name, path=path, format=fmt, rank=None, warnings=tuple(warnings), meta=meta
        )
    index: dict[str, int] = {}
    codes, steps, values, walls, rank_col = [], [], [], [], []
    for r, p in filled:
        remap = np.array([index.setdefault(n, len(index)) for n in p.names], dtype=np.int32)
        codes.append(remap[p.codes])
        steps.append(p.steps)
        values.append(p.values)
        walls.append(p.wall_time if p.wall_time is not None else np.full(len(p), np.nan))
        rank_col.append(np.full(len(p), r, dtype=np.int64) if p.rank is None else p.rank)
    return RawRun(
        name=name,
        path=path,
        format=fmt,
        names=tuple(index),
        codes=np.concatenate(codes).astype(np.int32),
        steps=np.concatenate(steps),
        values=np.concatenate(values),
        wall_time=np.concatenate(walls),
        rank=np.concatenate(rank_col),
        warnings=tuple(warnings),
        meta=meta,
        **({"context": context} if context else {}),
    )
