"""Generic CSV: wide (a step column + metric columns) or long (step, metric, value[, ...]).

Cells: empty/null = not logged; ``nan``/``inf``/``-Infinity`` kept as numbers. A column with no
number at all (e.g. a time string) is ignored with a warning; a row whose step or cell is damaged
is dropped and counted (how many, first line numbers) - never silently.

Both paths stream the file (16 MB blocks of whole lines, or a row at a time) and keep only the
numbers, so memory follows the values kept, not the file (issue 13 R1); a "line" over
raw.MAX_LINE (a sparse file, one line of gigabytes) is refused at once with one line.
"""

from __future__ import annotations

import csv as _csv
import io
import math
import os
import re
from array import array
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from stabdiag.errors import SourceError
from stabdiag.safetext import excerpt
from stabdiag.sources import tabular as tab
from stabdiag.sources.raw import (
    BAD,
    Lines,
    RawRun,
    RunColumns,
    bad_lines_warning,
    capped_lines,
    from_rows,
    parse_number,
    parse_step,
)

FORMAT = "csv"
_EXPECTED = "a CSV file with a header row"


def _encoding(path: Path) -> str:
    with open(path, "rb") as fh:  # UTF-16 (Excel, PowerShell) by its BOM; stray bytes -> U+FFFD
        return "utf-16" if fh.read(2) in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"


class _Rows:
    """The rows of a CSV file, read as a stream (header first, then (line number, cells)).

    Rows that cannot be parsed (a cell over the csv field limit) become a too-long row, which the
    readers count as a bad row, and reading goes on at the next line. A line over raw.MAX_LINE is
    refused (SourceError) before it is held in memory. While streaming it notes what the choice
    of quoting needs: whether rows skip lines (quoted newlines, blank lines), whether a cell holds
    a line end, and how many rows have the header's width."""

    def __init__(self, path: Path, enc: str, quoting: int) -> None:
        self.path, self.enc, self.quoting = path, enc, quoting
        self.header: list[str] | None = None
        self.jumps = self.newline_cells = False
        self.full_width = 0

    def __iter__(self):  # noqa: ANN204 - yields (line number, cells)
        with open(self.path, newline="", encoding=self.enc, errors="replace") as fh:
            reader = _csv.reader(capped_lines(fh, self.path, _EXPECTED), quoting=self.quoting)
            header = next(reader, None)
            none = self.quoting == _csv.QUOTE_NONE
            if none and header is not None:
                header = [h[1:-1] if len(h) > 1 and h[0] == h[-1] == '"' else h for h in header]
            self.header = header
            width = len(header or ())
            prev = 1
            while True:
                try:
                    for r in reader:
                        if not r:
                            continue
                        n = reader.line_num
                        if none:
                            r = [c[1:-1] if len(c) > 1 and c[0] == c[-1] == '"' else c for c in r]
                        self._note(n, r, prev, width)
                        prev = n
                        yield n, r
                    break
                except _csv.Error:
                    n = reader.line_num
                    r = [""] * (width + 1)
                    self._note(n, r, prev, width)
                    prev = n
                    yield n, r

    def _note(self, n: int, r: list[str], prev: int, width: int) -> None:
        self.jumps = self.jumps or n - prev > 1
        self.full_width += len(r) == width
        if not self.newline_cells and n - prev > 1:
            self.newline_cells = any("\n" in c or "\r" in c for c in r)


def _guard(path: Path, fn, *args):  # noqa: ANN001, ANN202 - reading errors as one line
    try:
        return fn(*args)
    except (OSError, UnicodeError, _csv.Error) as exc:
        raise SourceError(path, _EXPECTED, f"unreadable text ({exc})") from None


FAST_MIN_BYTES = 32 * 1024


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return FAST_MIN_BYTES  # let the fast path raise or return None as before


def _last_line_unfinished(path: Path) -> bool:
    """Whether the file ends inside a line (no final newline): a log still being written, whose
    last line may be half a row ("3,1." for "3,1.85"). That line is left out, with a note."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            if fh.tell() == 0:
                return False
            fh.seek(-min(2, fh.tell()), 2)
            tail = fh.read(2)
            # UTF-8 ends in a line end byte; UTF-16-LE in the line end followed by a zero byte
            return not (tail.endswith((b"\n", b"\r")) or tail in (b"\n\x00", b"\r\x00"))
    except OSError:
        return False


def read(
    path: Path, fmt: str = FORMAT, name: str | None = None, *, fast: bool = True
) -> list[RawRun]:
    """``fast=False`` forces the row-by-row path (the fast path must give the same runs). Files
    under FAST_MIN_BYTES go row by row: pandas' fixed cost per file dominates there (a tree of
    thousands of small metrics.csv files read 20% faster). Both paths stream the file: memory
    follows the values kept, not the file size."""
    if fast:
        data = _small_file(path)
        runs = None if data is None else _read_small(path, fmt, name, data)
        if runs is not None:
            return runs
    partial = _last_line_unfinished(path)
    if fast and not partial and _size(path) >= FAST_MIN_BYTES:
        runs = _read_fast(path, fmt, name)
        if runs is not None:
            return runs
    enc = _guard(path, _encoding, path)
    rows = _Rows(path, enc, _csv.QUOTE_MINIMAL)
    runs = _guard(path, _read_rows, path, fmt, name, rows, partial)
    if rows.jumps and rows.newline_cells:
        # Rows spanning lines with a line end in a cell: either a valid quoted cell with a
        # newline (csv.writer writes those) or an unterminated quote that swallowed every later
        # line into one cell. Keep the reading that gives more well-formed rows (quotes as text
        # only when that is clearly better); a counting pass decides, nothing of it is kept.
        width = len(rows.header or ())
        if _guard(path, _count_width, _Rows(path, enc, _csv.QUOTE_NONE), width) > rows.full_width:
            rows = _Rows(path, enc, _csv.QUOTE_NONE)
            runs = _guard(path, _read_rows, path, fmt, name, rows, partial)
    if runs is None:
        raise _no_step_column(path, [h.strip() for h in rows.header or ()])
    return runs


def _count_width(rows: _Rows, width: int) -> int:
    return sum(len(r) == width for _, r in rows)


def _no_step_column(path: Path, header: list[str]) -> SourceError:
    return SourceError(
        path,
        f"a CSV with a step column ({', '.join(tab.STEP_COLUMNS[:6])}, ...)",
        "columns "
        + ", ".join(excerpt(h, 40) for h in header[:6])
        + (", ..." if len(header) > 6 else ""),
    )


def _read_rows(
    path: Path, fmt: str, name: str | None, rows: _Rows, partial: bool
) -> list[RawRun] | None:
    """The runs of a file read row by row; None when the header has no step column."""
    it = iter(rows)
    held: list = []
    first = next(it, None)  # reads the header (and the first row)
    if not rows.header:
        raise SourceError(path, _EXPECTED, "an empty file")
    header = [h.strip() for h in rows.header]
    step_col = tab.find_column(header, tab.STEP_COLUMNS)
    if step_col is None:
        for _ in it:  # the caller may compare readings: finish this one's counts
            pass
        return None
    stream = _chain(first, it)
    if partial:
        stream = _all_but_last(stream, held)
    metric_col = tab.find_column(header, tab.METRIC_COLUMNS)
    value_col = tab.find_column(header, tab.VALUE_COLUMNS)
    base = name or path.stem
    if metric_col and value_col:
        runs = _long(path, fmt, base, header, stream, step_col, metric_col, value_col)
    else:
        runs = _wide(path, fmt, base, header, stream, step_col)
    if held:
        note = (
            f"{path}: the last line has no line end (a file still being written?): "
            f"line {held[0][0]} left out until it is complete"
        )
        runs = [replace(r, warnings=(*r.warnings, note)) for r in runs]
    return runs


def _chain(first, it):  # noqa: ANN001, ANN202
    if first is not None:
        yield first
        yield from it


def _all_but_last(rows, held: list):  # noqa: ANN001, ANN202
    """The rows except the last, which goes to ``held`` (a half-written line: not a row yet)."""
    last = None
    for row in rows:
        if last is not None:
            yield last
        last = row
    if last is not None:
        held.append(last)


def _extras(header: list[str]) -> tuple[str | None, str | None, str | None]:
    return (
        tab.find_column(header, tab.WALL_COLUMNS),
        tab.find_column(header, tab.RANK_COLUMNS),
        tab.find_column(header, tab.RUN_COLUMNS),
    )


def _wall(cell: str) -> float:
    w = parse_number(cell)
    return w if isinstance(w, float) else math.nan


def _long(path, fmt, base, header, rows, step_col, metric_col, value_col) -> list[RawRun]:
    ix = {h: i for i, h in enumerate(header)}
    wall_col, rank_col, run_col = _extras(header)
    si, mi, vi = ix[step_col], ix[metric_col], ix[value_col]
    wi = ix[wall_col] if wall_col else None
    ki = ix[rank_col] if rank_col else None
    ri = ix[run_col] if run_col else None
    by_run: dict[str, RunColumns] = {}
    bad = Lines()
    width = len(header)
    for line, cells in rows:
        if len(cells) != width:
            bad.add(line)
            continue
        step = parse_step(cells[si])
        value = parse_number(cells[vi])
        metric = cells[mi].strip()
        rank = parse_step(cells[ki]) if ki is not None else None
        if step is None or value is BAD or not metric or (ki is not None and rank is None):
            bad.add(line)
            continue
        if value is None:
            continue
        run = (cells[ri].strip() if ri is not None else base) or base
        cols = by_run.get(run)
        if cols is None:
            cols = by_run[run] = RunColumns(wall=wi is not None)
        cols.add(step, metric, value, _wall(cells[wi]) if wi is not None else math.nan, rank)
    warnings = [bad.warning(str(path), "bad rows")] if bad else []
    return _runs(by_run, path, fmt, base, warnings, rank_col)


def _runs(by_run: dict[str, RunColumns], path, fmt, base, warnings, rank_col) -> list[RawRun]:
    """One RawRun per run collected by the long and wide paths (an empty file still names its run)."""
    out = [
        cols.build(run, str(path), fmt, rank=bool(rank_col), warnings=warnings)
        for run, cols in by_run.items()
    ]
    return out or [from_rows(base, str(path), fmt, [], warnings=warnings)]


def _wide(path, fmt, base, header, rows, step_col) -> list[RawRun]:
    wall_col, rank_col, run_col = _extras(header)
    special = {step_col, wall_col, rank_col, run_col}
    metrics = [(i, h) for i, h in enumerate(header) if h not in special and h]
    panel = [tab.WANDB_PANEL.match(h) for _, h in metrics]
    is_panel = bool(metrics) and all(panel)
    ix = {h: i for i, h in enumerate(header)}
    warnings: list[str] = []
    if is_panel:
        dropped = [h for (_, h), m in zip(metrics, panel, strict=True) if m.group("agg")]
        metrics = [(i, h) for (i, h), m in zip(metrics, panel, strict=True) if not m.group("agg")]
        if dropped:
            warnings.append(
                f"{path}: W&B panel export; {len(dropped)} __MIN/__MAX bucket "
                "columns ignored (the plain column is the value)"
            )
    # Where each column's values go: (run, metric) for a panel export, else the row's run.
    target = [
        (m.group("run"), m.group("metric")) if is_panel else (None, h)
        for (_, h), m in zip(metrics, [tab.WANDB_PANEL.match(h) for _, h in metrics], strict=True)
    ]
    si = ix[step_col]
    wi = ix[wall_col] if wall_col else None
    ki = ix[rank_col] if rank_col else None
    ri = ix[run_col] if run_col else None
    numeric = [0] * len(metrics)
    text_lines = [array("q") for _ in metrics]  # lines of non-numeric cells, per column
    by_run: dict[str, RunColumns] = {}
    bad = Lines()
    width = len(header)
    for line, cells in rows:
        if len(cells) != width:
            bad.add(line)
            continue
        step = parse_step(cells[si])
        rank = parse_step(cells[ki]) if ki is not None else None
        if step is None or (ki is not None and rank is None):
            bad.add(line)
            continue
        row_run = (cells[ri].strip() if ri is not None else base) or base
        wall = _wall(cells[wi]) if wi is not None else math.nan
        for j, (i, _) in enumerate(metrics):
            v = parse_number(cells[i])
            if v is None:
                continue
            if v is BAD:
                text_lines[j].append(line)
                continue
            # Every number is kept as it comes: a column with a number is never text-only,
            # so nothing kept here is dropped later (only the warnings wait for the end).
            numeric[j] += 1
            run, metric = target[j]
            run = run or row_run
            cols = by_run.get(run)
            if cols is None:
                cols = by_run[run] = RunColumns(wall=wi is not None)
            cols.add(step, metric, v, wall, rank)
    text_only = {
        h for (_, h), n, t in zip(metrics, numeric, text_lines, strict=True) if t and not n
    }
    if text_only:
        warnings.append(f"{path}: non-numeric column(s) ignored: {', '.join(sorted(text_only))}")
    if bad:
        warnings.append(bad.warning(str(path), "bad rows"))
    mixed = [
        np.frombuffer(t, np.int64) for t, n in zip(text_lines, numeric, strict=True) if t and n
    ]
    if mixed:
        lines = np.unique(np.concatenate(mixed))
        warnings.append(
            bad_lines_warning(str(path), "non-numeric cells", lines[:5].tolist(), count=len(lines))
        )
    return _runs(by_run, path, fmt, base, warnings, rank_col)


# --------------------------------------------------------------------------- small files
# A tree of 100,000 small logs spends its time per file, not per byte (issue 13 R4): a small,
# clean, wide file (the common case: ``step,loss,...`` written by a script) is read with one
# read(), str.split and float(), about a quarter of the row-by-row path's cost. Each cell means
# exactly what parse_number / parse_step make of it (float() agrees with parse_number wherever
# it succeeds; a cell where it fails is asked of parse_number itself). Anything that would need
# a warning, a quote rule or a line number (bad or text cells, ragged or blank lines, quotes,
# NUL, lone CR, no final line end, rank/run/long layouts, W&B panels, duplicate columns)
# returns None and takes the row-by-row path, which stays the reference.


def _small_file(path: Path) -> bytes | None:
    """The bytes of a file under FAST_MIN_BYTES (None: larger, or it cannot be read here; the
    usual path then reads it and reports what is wrong)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(FAST_MIN_BYTES)
    except OSError:
        return None
    return data if len(data) < FAST_MIN_BYTES else None


def _read_small(path: Path, fmt: str, name: str | None, data: bytes) -> list[RawRun] | None:
    """The runs of a small, clean, wide CSV given as bytes, as the row-by-row path reads them;
    None for anything else (see the section comment)."""
    if not data.endswith(b"\n") or b'"' in data or b"\x00" in data:
        return None
    if b"\r" in data:
        if data.count(b"\r") != data.count(b"\r\n"):
            return None
        data = data.replace(b"\r\n", b"\n")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text.startswith("\ufeff"):  # utf-8-sig, as _encoding reads it: one BOM dropped
        text = text[1:]
    lines = text.split("\n")
    lines.pop()  # after the final line end
    if len(lines) < 2 or not all(lines):
        return None  # a header alone, or a blank line (skipped but counted by the row path)
    header = [h.strip() for h in lines[0].split(",")]
    width = len(header)
    if len(set(header)) != width:
        return None
    lower = {h.lower(): h for h in header}  # tab.find_column's lookup, built once

    def find(candidates: tuple[str, ...]) -> str | None:
        return next((lower[c] for c in candidates if c in lower), None)

    step_col = find(tab.STEP_COLUMNS)
    if step_col is None or (find(tab.METRIC_COLUMNS) and find(tab.VALUE_COLUMNS)):
        return None
    if find(tab.RANK_COLUMNS) or find(tab.RUN_COLUMNS):
        return None
    wall_col = find(tab.WALL_COLUMNS)
    special = {step_col, wall_col}
    metrics = [(i, h) for i, h in enumerate(header) if h not in special and h]
    if metrics and all(tab.WANDB_PANEL.match(h) for _, h in metrics):
        return None
    rows = [line.split(",") for line in lines[1:]]
    if set(map(len, rows)) != {width}:
        return None
    cols = list(zip(*rows, strict=True))
    try:
        steps = list(map(float, cols[header.index(step_col)]))
    except ValueError:
        return None
    for k, v in enumerate(steps):
        if not v.is_integer() or abs(v) >= 2.0**63:
            return None
        steps[k] = int(v)
    walls = None
    if wall_col is not None:
        walls = [_small_wall(c) for c in cols[header.index(wall_col)]]
    values = []
    for i, _ in metrics:
        try:
            values.append(list(map(float, cols[i])))
        except ValueError:
            got = [_small_value(c) for c in cols[i]]
            if any(v is BAD for v in got):
                return None  # text cells: warnings with line numbers, the row path's job
            values.append(got)
    base = name or path.stem
    if metrics and all(None not in v for v in values):  # every cell a number: row-major at once
        m = len(metrics)
        return [
            RawRun(
                name=base,
                path=str(path),
                format=fmt,
                names=tuple(h for _, h in metrics),
                codes=np.arange(m * len(steps), dtype=np.int32) % np.int32(m),
                steps=np.repeat(np.array(steps, dtype=np.int64), m),
                values=np.array(values, dtype=np.float64).T.ravel(),
                wall_time=None if walls is None else np.repeat(np.array(walls, np.float64), m),
            )
        ]
    index: dict[str, int] = {}
    codes, kept_steps, kept, kept_walls = [], [], [], []
    for r, step in enumerate(steps):
        for j, (_, h) in enumerate(metrics):
            v = values[j][r]
            if v is None:
                continue
            code = index.get(h)
            if code is None:
                code = index[h] = len(index)
            codes.append(code)
            kept_steps.append(step)
            kept.append(v)
            if walls is not None:
                kept_walls.append(walls[r])
    if not codes:  # as _runs: the file still names its run
        return [from_rows(base, str(path), fmt, [])]
    return [
        RawRun(
            name=base,
            path=str(path),
            format=fmt,
            names=tuple(index),
            codes=np.array(codes, dtype=np.int32),
            steps=np.array(kept_steps, dtype=np.int64),
            values=np.array(kept, dtype=np.float64),
            wall_time=None if walls is None else np.array(kept_walls, dtype=np.float64),
        )
    ]


def _small_value(cell: str) -> float | None | object:
    try:
        return float(cell)
    except ValueError:
        return parse_number(cell)


def _small_wall(cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        return _wall(cell)


# --------------------------------------------------------------------------- fast path
# A well-formed file (UTF-8, no quotes, NUL or lone CR, no blank line, every line with the
# header's number of cells, no cell near the csv field limit) is split by pandas' C parser into
# string columns and converted a column at a time; each cell means exactly what parse_number and
# parse_step make of it. Anything else returns None and takes the row-by-row path above.

_NUMBER, _ABSENT, _TEXT = 0, 1, 2
_MAX_LINE = 100_000  # below the csv module's 131072-character field limit


CHUNK_BYTES = 16 << 20  # the fast path parses this much of the file at a time


def _blocks(fh, chunk: int | None = None):  # noqa: ANN001, ANN202 - yields bytes
    """The file in blocks of whole lines (each ends in a line end), about ``chunk`` bytes each.
    A line longer than a block makes the block grow; one over _MAX_LINE ends the fast path."""
    carry = b""
    chunk = chunk or CHUNK_BYTES
    left = os.fstat(fh.fileno()).st_size
    while True:
        # read() sets aside the size asked for: ask for what is left (a small file costs little)
        data = fh.read(min(chunk, max(left, 1 << 16)))
        left -= len(data)
        if not data:
            if carry:
                yield carry
            return
        buf = carry + data if carry else data
        cut = buf.rfind(b"\n") + 1
        if not cut:
            if len(buf) > _MAX_LINE:
                yield None
                return
            carry = buf
            continue
        carry = buf[cut:]
        yield buf if cut == len(buf) else buf[:cut]


def _split_block(data: bytes, commas: int, header: bool) -> list[np.ndarray] | None:
    """Per column of one block of whole lines, either float64 values (every cell a number) or
    the cell strings (object array); None when the block is not well-formed (then the whole file
    goes row by row). ``commas``: the header's number of commas; ``header``: the block starts
    with the header line (checked, not parsed)."""
    if b'"' in data or b"\x00" in data or data.count(b"\r") != data.count(b"\r\n"):
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    data = data.replace(b"\r\n", b"\n") if b"\r" in data else data
    # the block without its final line end, as a view (no copy of the block)
    buf = np.frombuffer(data, np.uint8, count=len(data) - data.endswith(b"\n"))
    ends = np.flatnonzero(buf == 10)
    starts = np.concatenate(([0], ends + 1))
    stops = np.concatenate((ends, [len(buf)]))
    lengths = stops - starts
    if lengths.min() == 0 or lengths.max() > _MAX_LINE:
        return None
    comma_at = np.flatnonzero(buf == 44)
    per_line = np.diff(np.searchsorted(comma_at, np.concatenate((starts, [len(buf) + 1]))))
    if (per_line != commas).any():
        return None
    del buf, comma_at, per_line, starts, stops, lengths
    n = len(ends) if header else len(ends) + 1
    if not n:
        return []
    frame = pd.read_csv(
        io.BytesIO(data),
        header=None,
        names=list(range(commas + 1)),
        skiprows=1 if header else None,
        na_filter=False,
        quoting=_csv.QUOTE_NONE,
        engine="c",
        low_memory=False,
        skip_blank_lines=False,
        encoding="utf-8",
    )
    if len(frame) != n:
        return None
    cols = []
    for i in range(commas + 1):
        col = frame[i]
        if col.dtype.kind in "iu":
            # the C parser read every cell as an integer; float(cell) rounds the same way except
            # for "-0" (float gives -0.0): such a file takes the row-by-row path
            if (col == 0).any() and _MINUS_ZERO.search(data):
                return None
            cols.append(col.to_numpy(np.float64))
        elif col.dtype.kind == "f":  # every cell a number, parsed as float() parses it
            cols.append(col.to_numpy(np.float64))
        elif col.dtype.kind in "OT" or isinstance(col.dtype, pd.StringDtype):
            cols.append(col.to_numpy(dtype=object))
        else:  # booleans or anything else the parser inferred: not float()'s reading
            return None
    return cols


_MINUS_ZERO = re.compile(rb"(?:^|[,\n])[ \t]*-0+(?:\.0*)?[ \t]*(?:[,\n]|$)")


def _numbers(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """parse_number over a column: float64 values (NaN where not a number) and a status per cell
    (_NUMBER, _ABSENT, _TEXT). float() alone agrees with parse_number wherever it succeeds."""
    n = len(cells)
    if cells.dtype == np.float64:
        return cells.copy(), np.zeros(n, np.int8)
    try:
        return np.fromiter(map(float, cells), np.float64, n), np.zeros(n, np.int8)
    except ValueError:
        pass
    empty = cells == ""
    if empty.any():
        try:
            vals = np.full(n, np.nan)
            vals[~empty] = np.fromiter(map(float, cells[~empty]), np.float64, n - int(empty.sum()))
            return vals, empty.astype(np.int8)
        except ValueError:
            pass
    parsed = [parse_number(c) for c in cells]
    status = np.fromiter(
        (_TEXT if v is BAD else _ABSENT if v is None else _NUMBER for v in parsed), np.int8, n
    )
    vals = np.fromiter((v if isinstance(v, float) else np.nan for v in parsed), np.float64, n)
    return vals, status


def _steps(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """parse_step over a column: int64 steps and whether each cell is a valid step."""
    v, status = _numbers(cells)
    with np.errstate(invalid="ignore"):
        ok = (status == _NUMBER) & np.isfinite(v) & (np.abs(v) < 2.0**63)
        ok &= v == np.floor(v)
    return np.where(ok, v, 0).astype(np.int64), ok


def _stripped(cells: np.ndarray) -> np.ndarray:
    return np.array([c.strip() for c in cells], dtype=object)


def _read_fast(path: Path, fmt: str, name: str | None) -> list[RawRun] | None:
    """The runs of a well-formed file, parsed a block (CHUNK_BYTES) at a time: only the kept
    values grow with the file. None as soon as any block is not well-formed."""
    try:
        with open(path, "rb") as fh:
            return _FastReader(path, fmt, name).read(fh)
    except OSError:
        return None


class _FastReader:
    """The state carried from block to block: series and run names seen so far (codes are
    global), the dropped lines, per column whether a number or a text cell was seen, and the
    kept values (one array per block, joined once at the end)."""

    def __init__(self, path: Path, fmt: str, name: str | None) -> None:
        self.path, self.fmt, self.base = path, fmt, name or path.stem
        self.bad = Lines()
        self.parts: list[tuple] = []  # (codes, steps, values, wall, rank, run) per block
        self.names: dict[str, int] = {}
        self.runs: dict[str, int] = {}

    def read(self, fh) -> list[RawRun] | None:  # noqa: ANN001, C901 - one pass, in order
        first = True
        line0 = 1  # line number of the block's first line
        for block in _blocks(fh):
            if block is None:
                return None
            if first:
                if block[:2] in (b"\xff\xfe", b"\xfe\xff"):
                    return None
                if block.startswith(b"\xef\xbb\xbf"):
                    block = block[3:]
                head = block[: block.find(b"\n")]
                try:
                    header = [h.strip() for h in head.rstrip(b"\r").decode("utf-8").split(",")]
                except UnicodeDecodeError:
                    return None
                if not self._start(header) or block.find(b"\n") == len(block) - 1:
                    return None  # no step column (the row path raises), or a header alone
                self.commas = head.count(b",")
            cols = _split_block(block, self.commas, first)
            if cols is None:
                return None
            if cols:
                line0 += first
                if not self._block(cols, line0):
                    return None
                line0 += len(cols[0])
            first = False
        if first:
            return None
        return self._finish()

    def _start(self, header: list[str]) -> bool:
        if len(set(header)) != len(header):
            return False
        self.step_col = tab.find_column(header, tab.STEP_COLUMNS)
        if self.step_col is None:
            return False
        self.ix = {h: i for i, h in enumerate(header)}
        self.wall_col, self.rank_col, self.run_col = _extras(header)
        metric_col = tab.find_column(header, tab.METRIC_COLUMNS)
        value_col = tab.find_column(header, tab.VALUE_COLUMNS)
        self.long = bool(metric_col and value_col)
        self.metric_col, self.value_col = metric_col, value_col
        if not self.long:
            special = {self.step_col, self.wall_col, self.rank_col, self.run_col}
            self.metrics = [(i, h) for i, h in enumerate(header) if h not in special and h]
            if self.metrics and all(tab.WANDB_PANEL.match(h) for _, h in self.metrics):
                return False  # W&B panel export: the row-by-row path
            self.names = {h: j for j, (_, h) in enumerate(self.metrics)}
            self.numeric = np.zeros(len(self.metrics), bool)
            self.text: list[list[np.ndarray]] = [[] for _ in self.metrics]
        return True

    def _block(self, cols: list[np.ndarray], line0: int) -> bool:
        ix = self.ix
        if any(
            c and cols[ix[c]].dtype != object
            for c in (self.run_col, self.metric_col if self.long else None)
        ):
            return False  # names the parser read as numbers lost their spelling ("01")
        n = len(cols[0])
        steps, ok = _steps(cols[ix[self.step_col]])
        rank = None
        if self.rank_col:
            rank, rank_ok = _steps(cols[ix[self.rank_col]])
            ok &= rank_ok
        wall = None
        if self.wall_col:
            wall, wall_status = _numbers(cols[ix[self.wall_col]])
            wall[wall_status != _NUMBER] = np.nan
        run = None
        if self.run_col:
            names = _stripped(cols[ix[self.run_col]])
            names[names == ""] = self.base
            local, uniq = pd.factorize(names, sort=False)
            remap = np.array(
                [self.runs.setdefault(str(u), len(self.runs)) for u in uniq], dtype=np.int32
            )
            run = remap[local] if len(uniq) else local.astype(np.int32)
        lines = np.arange(line0, line0 + n)
        if self.long:
            values, status = _numbers(cols[ix[self.value_col]])
            metric = _stripped(cols[ix[self.metric_col]])
            ok &= (status != _TEXT) & (metric != "")
            keep = np.flatnonzero(ok & (status == _NUMBER))
            local, uniq = pd.factorize(metric[keep], sort=False)
            remap = np.array(
                [self.names.setdefault(str(u), len(self.names)) for u in uniq], dtype=np.int32
            )
            codes = remap[local] if len(uniq) else local.astype(np.int32)
            rows, values = keep, values[keep]
        else:
            good = np.flatnonzero(ok)
            parsed = [_numbers(cols[i][good]) for i, _ in self.metrics]
            for j, (_, st) in enumerate(parsed):
                self.numeric[j] |= bool((st == _NUMBER).any())
                text = st == _TEXT
                if text.any():
                    self.text[j].append(lines[good[text]])
            if parsed:  # row-major: a row's cells in header order, as the rows were written
                st = np.stack([p[1] for p in parsed], axis=1)
                r, c = np.nonzero(st == _NUMBER)
                values = np.stack([p[0] for p in parsed], axis=1)[r, c]
                rows, codes = good[r], c.astype(np.int32)
            else:
                rows, codes, values = np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0)
        if not ok.all():
            self.bad.extend(lines[~ok])
        self.parts.append(
            (
                codes,
                steps[rows],
                values,
                None if wall is None else wall[rows],
                None if rank is None else rank[rows],
                None if run is None else run[rows],
            )
        )
        return True

    def _finish(self) -> list[RawRun]:
        path, warnings = self.path, []
        if not self.long:
            text_only = [
                h
                for (_, h), num, t in zip(self.metrics, self.numeric, self.text, strict=True)
                if t and not num
            ]
            if text_only:
                warnings.append(
                    f"{path}: non-numeric column(s) ignored: {', '.join(sorted(text_only))}"
                )
        if self.bad:
            warnings.append(self.bad.warning(str(path), "bad rows"))
        if not self.long:
            mixed = [a for num, t in zip(self.numeric, self.text, strict=True) if num for a in t]
            if mixed:
                lines = np.unique(np.concatenate(mixed))
                warnings.append(
                    bad_lines_warning(
                        str(path), "non-numeric cells", lines[:5].tolist(), count=len(lines)
                    )
                )
        cols = []
        for k in range(6):  # joined a field at a time, each block's piece freed once joined
            pieces = [p[k] for p in self.parts]
            cols.append(
                None
                if not pieces or pieces[0] is None
                else pieces[0]
                if len(pieces) == 1
                else np.concatenate(pieces)
            )
            del pieces
            self.parts = [p[:k] + (None,) + p[k + 1 :] for p in self.parts]
        self.parts = []
        codes, steps, values, wall, rank, run = cols
        return _group(
            path,
            self.fmt,
            self.base,
            codes,
            list(self.names),
            steps,
            values,
            wall,
            rank,
            run,
            list(self.runs),
            warnings,
        )


def _group(
    path, fmt, base, codes, names, steps, values, wall, rank, run, run_names, warnings
) -> list[RawRun]:
    """RawRuns as from_rows builds them: runs and their series names in first-seen order.
    Every array holds one entry per kept value; ``codes`` index ``names``, ``run`` (codes into
    ``run_names``, or None: one run) the run of each value."""
    if codes is None or not len(codes):
        return [from_rows(base, str(path), fmt, [], warnings=warnings)]
    if run is None:
        parts = [(base, None)]
    else:
        run_codes, firsts = pd.factorize(run, sort=False)
        order = np.argsort(run_codes, kind="stable")
        bounds = np.searchsorted(run_codes[order], np.arange(len(firsts) + 1))
        parts = [(run_names[r], order[bounds[i] : bounds[i + 1]]) for i, r in enumerate(firsts)]
    out = []
    for run_name, sel in parts:
        c = codes if sel is None else codes[sel]
        seen = _first_seen(c, len(names))
        if np.array_equal(seen, np.arange(len(names))):
            remap = None  # the usual case: series first seen in column order, codes as they are
        else:
            remap = np.zeros(len(names), np.int32)
            remap[seen] = np.arange(len(seen), dtype=np.int32)

        out.append(
            RawRun(
                name=run_name,
                path=str(path),
                format=fmt,
                names=tuple(str(names[k]) for k in seen),
                codes=c if remap is None else remap[c],
                steps=_pick(steps, sel),
                values=_pick(values, sel),
                wall_time=_pick(wall, sel),
                rank=_pick(rank, sel),
                warnings=tuple(warnings),
            )
        )
    return out or [from_rows(base, str(path), fmt, [], warnings=warnings)]


def _pick(a: np.ndarray | None, sel: np.ndarray | None) -> np.ndarray | None:
    """``a`` at ``sel`` (None: all of it, no copy)."""
    return None if a is None else a if sel is None else a[sel]


def _first_seen(codes: np.ndarray, n: int, step: int = 1 << 20) -> np.ndarray:
    """The distinct codes (all below ``n``) in order of first appearance, looked for a slice at
    a time: most files show every series in their first rows, so this stops early and never
    sorts the whole array."""
    first: dict[int, int] = {}
    for lo in range(0, len(codes), step):
        u, i = np.unique(codes[lo : lo + step], return_index=True)
        for code, at in zip(u.tolist(), (i + lo).tolist(), strict=True):
            first.setdefault(code, at)
        if len(first) == n:
            break
    return np.array(sorted(first, key=first.__getitem__), dtype=np.int64)
