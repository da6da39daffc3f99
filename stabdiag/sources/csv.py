"""Generic CSV: wide (a step column + metric columns) or long (step, metric, value[, ...]).

Cells: empty/null = not logged; ``nan``/``inf``/``-Infinity`` kept as numbers. A column with no
number at all (e.g. a time string) is ignored with a warning; a row whose step or cell is damaged
is dropped and counted (how many, first line numbers) - never silently.
"""

from __future__ import annotations

import csv as _csv
import io
import re
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from stabdiag.errors import SourceError
from stabdiag.safetext import excerpt
from stabdiag.sources import tabular as tab
from stabdiag.sources.raw import BAD, RawRun, bad_lines_warning, from_rows, parse_number, parse_step

FORMAT = "csv"


def read_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, cells) rows; the file must have a header and a step column."""
    try:
        with open(path, "rb") as fh:  # UTF-16 (Excel, PowerShell) by its BOM; stray bytes -> U+FFFD
            enc = "utf-16" if fh.read(2) in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
        header, rows = _rows(path, enc, _csv.QUOTE_MINIMAL)
        jumps = any(b - a > 1 for (a, _), (b, _) in zip([(1, [])] + rows, rows, strict=False))
        if jumps and any("\n" in c or "\r" in c for _, r in rows for c in r):
            # Either a valid quoted cell with a newline (csv.writer writes those) or an
            # unterminated quote that swallowed every later line into one cell: keep the reading
            # that gives more well-formed rows (quotes as text only when that is clearly better).
            h2, rows2 = _rows(path, enc, _csv.QUOTE_NONE)
            h2 = [h[1:-1] if len(h) > 1 and h[0] == h[-1] == '"' else h for h in h2 or []]
            width = len(header or ())
            if sum(len(r) == width for _, r in rows2) > sum(len(r) == width for _, r in rows):
                header, rows = h2, rows2
    except (OSError, UnicodeError, _csv.Error) as exc:
        raise SourceError(path, "a CSV file with a header row", f"unreadable text ({exc})") from None
    if not header:
        raise SourceError(path, "a CSV file with a header row", "an empty file")
    return [h.strip() for h in header], rows


def _rows(path: Path, enc: str, quoting: int) -> tuple[list[str] | None, list]:
    """Rows that cannot be parsed (a cell over the csv field limit) become a too-long row, which
    the readers count as a bad row, and reading goes on at the next line."""
    with open(path, newline="", encoding=enc, errors="replace") as fh:
        reader = _csv.reader(fh, quoting=quoting)
        header = next(reader, None)
        rows: list[tuple[int, list[str]]] = []
        while True:
            try:
                rows.extend((reader.line_num, r) for r in reader if r)
                break
            except _csv.Error:
                rows.append((reader.line_num, [""] * (len(header or ()) + 1)))
    if quoting == _csv.QUOTE_NONE:
        rows = [(n, [c[1:-1] if len(c) > 1 and c[0] == c[-1] == '"' else c for c in r])
                for n, r in rows]
    return header, rows


FAST_MIN_BYTES = 32 * 1024


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return FAST_MIN_BYTES  # let the fast path raise or return None as before


def _last_line_unfinished(path: Path) -> bool:
    """Whether the file ends inside a line (no final newline): a log still being written, whose
    last line may be half a row ("3,1." for "3,1.85"). That line is left out, silently."""
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


def read(path: Path, fmt: str = FORMAT, name: str | None = None, *, fast: bool = True) -> list[RawRun]:
    """``fast=False`` forces the row-by-row path (the fast path must give the same runs). Files
    under FAST_MIN_BYTES go row by row: pandas' fixed cost per file dominates there (a tree of
    thousands of small metrics.csv files read 20% faster)."""
    partial = _last_line_unfinished(path)
    if fast and not partial and _size(path) >= FAST_MIN_BYTES:
        runs = _read_fast(path, fmt, name)
        if runs is not None:
            return runs
    header, rows = read_rows(path)
    if partial and rows:
        dropped = rows[-1][0]
        rows = rows[:-1]   # a file still being written: its last line is not a row yet
        note = (f"{path}: the last line has no line end (a file still being written?): "
                f"line {dropped} left out until it is complete")
        return [replace(r, warnings=(*r.warnings, note)) for r in _read_rows_runs(
            path, fmt, name, header, rows)]
    return _read_rows_runs(path, fmt, name, header, rows)


def _read_rows_runs(path: Path, fmt: str, name: str | None, header: list[str],
                    rows: list[tuple[int, list[str]]]) -> list[RawRun]:
    step_col = tab.find_column(header, tab.STEP_COLUMNS)
    if step_col is None:
        raise SourceError(path, f"a CSV with a step column ({', '.join(tab.STEP_COLUMNS[:6])}, ...)",
                          "columns " + ", ".join(excerpt(h, 40) for h in header[:6])
                          + (", ..." if len(header) > 6 else ""))
    metric_col = tab.find_column(header, tab.METRIC_COLUMNS)
    value_col = tab.find_column(header, tab.VALUE_COLUMNS)
    base = name or path.stem
    if metric_col and value_col:
        return _long(path, fmt, base, header, rows, step_col, metric_col, value_col)
    return _wide(path, fmt, base, header, rows, step_col)


def _extras(header: list[str]) -> tuple[str | None, str | None, str | None]:
    return (tab.find_column(header, tab.WALL_COLUMNS), tab.find_column(header, tab.RANK_COLUMNS),
            tab.find_column(header, tab.RUN_COLUMNS))


def _long(path, fmt, base, header, rows, step_col, metric_col, value_col) -> list[RawRun]:
    ix = {h: i for i, h in enumerate(header)}
    wall_col, rank_col, run_col = _extras(header)
    by_run: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    bad: list[int] = []
    for line, cells in rows:
        if len(cells) != len(header):
            bad.append(line)
            continue
        step = parse_step(cells[ix[step_col]])
        value = parse_number(cells[ix[value_col]])
        metric = cells[ix[metric_col]].strip()
        rank = parse_step(cells[ix[rank_col]]) if rank_col else None
        if step is None or value is BAD or not metric or (rank_col and rank is None):
            bad.append(line)
            continue
        if value is None:
            continue
        run = cells[ix[run_col]].strip() if run_col else base
        d = by_run[run or base]
        d["rows"].append((step, metric, value))
        d["wall"].append(parse_number(cells[ix[wall_col]]) if wall_col else None)
        d["rank"].append(rank)
    warnings = [bad_lines_warning(str(path), "bad rows", bad)] if bad else []
    return _runs(by_run, path, fmt, base, warnings, wall_col, rank_col)


def _runs(by_run, path, fmt, base, warnings, wall_col, rank_col) -> list[RawRun]:
    """One RawRun per run collected by the long and wide paths (an empty file still names its run)."""
    out = []
    for run, d in by_run.items():
        wall = [w if isinstance(w, float) else float("nan") for w in d["wall"]]
        out.append(from_rows(run, str(path), fmt, d["rows"], wall=wall if wall_col else None,
                             rank=d["rank"] if rank_col else None, warnings=warnings))
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
            warnings.append(f"{path}: W&B panel export; {len(dropped)} __MIN/__MAX bucket "
                            "columns ignored (the plain column is the value)")
    numeric = defaultdict(int)
    text = defaultdict(int)
    bad: list[int] = []
    parsed = []
    for line, cells in rows:
        if len(cells) != len(header):
            bad.append(line)
            continue
        step = parse_step(cells[ix[step_col]])
        rank = parse_step(cells[ix[rank_col]]) if rank_col else None
        if step is None or (rank_col and rank is None):
            bad.append(line)
            continue
        vals = []
        for i, h in metrics:
            v = parse_number(cells[i])
            if v is BAD:
                text[h] += 1
            elif v is not None:
                numeric[h] += 1
            vals.append(v)
        parsed.append((line, step, rank, cells, vals))
    text_only = {h for h in text if not numeric[h]}
    if text_only:
        warnings.append(f"{path}: non-numeric column(s) ignored: {', '.join(sorted(text_only))}")
    by_run: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    bad_cells: list[int] = []
    for line, step, rank, cells, vals in parsed:
        for (_, h), v in zip(metrics, vals, strict=True):
            if v is None or h in text_only:
                continue
            if v is BAD:
                bad_cells.append(line)
                continue
            if is_panel:
                m = tab.WANDB_PANEL.match(h)
                run, metric = m.group("run"), m.group("metric")
            else:
                run = cells[ix[run_col]].strip() if run_col else base
                metric = h
            d = by_run[run or base]
            d["rows"].append((step, metric, v))
            d["rank"].append(rank)
            d["wall"].append(parse_number(cells[ix[wall_col]]) if wall_col else None)
    if bad:
        warnings.append(bad_lines_warning(str(path), "bad rows", bad))
    if bad_cells:
        warnings.append(bad_lines_warning(str(path), "non-numeric cells", sorted(set(bad_cells))))
    return _runs(by_run, path, fmt, base, warnings, wall_col, rank_col)


# --------------------------------------------------------------------------- fast path
# A well-formed file (UTF-8, no quotes, NUL or lone CR, no blank line, every line with the
# header's number of cells, no cell near the csv field limit) is split by pandas' C parser into
# string columns and converted a column at a time; each cell means exactly what parse_number and
# parse_step make of it. Anything else returns None and takes the row-by-row path above.

_NUMBER, _ABSENT, _TEXT = 0, 1, 2
_MAX_LINE = 100_000  # below the csv module's 131072-character field limit


def _split_fast(path: Path) -> tuple[list[str], list[np.ndarray]] | None:
    """Header and per column either float64 values (every cell a number) or the cell strings
    (object array), or None when the file is not well-formed."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if b'"' in data or b"\x00" in data or data.count(b"\r") != data.count(b"\r\n"):
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    data = data.replace(b"\r\n", b"\n") if b"\r" in data else data
    if data.endswith(b"\n"):
        data = data[:-1]
    buf = np.frombuffer(data, np.uint8)
    ends = np.flatnonzero(buf == 10)
    if not len(ends):
        return None  # a header alone: nothing to gain
    starts = np.concatenate(([0], ends + 1))
    stops = np.concatenate((ends, [len(buf)]))
    lengths = stops - starts
    if lengths.min() == 0 or lengths.max() > _MAX_LINE:
        return None
    commas = np.flatnonzero(buf == 44)
    per_line = np.diff(np.searchsorted(commas, np.concatenate((starts, [len(buf) + 1]))))
    if (per_line != per_line[0]).any():
        return None
    header = [h.strip() for h in data[:ends[0]].decode("utf-8").split(",")]
    if len(set(header)) != len(header):
        return None
    frame = pd.read_csv(io.BytesIO(data[ends[0] + 1:]), header=None, names=list(range(len(header))),
                        na_filter=False, quoting=_csv.QUOTE_NONE, engine="c", low_memory=False,
                        skip_blank_lines=False, encoding="utf-8")
    if len(frame) != len(ends):
        return None
    cols = []
    for i in range(len(header)):
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
    return header, cols


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
    status = np.fromiter((_TEXT if v is BAD else _ABSENT if v is None else _NUMBER for v in parsed),
                         np.int8, n)
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
    split = _split_fast(path)
    if split is None:
        return None
    header, cols = split
    step_col = tab.find_column(header, tab.STEP_COLUMNS)
    if step_col is None:
        return None  # the row-by-row path raises the error
    ix = {h: i for i, h in enumerate(header)}
    wall_col, rank_col, run_col = _extras(header)
    metric_col = tab.find_column(header, tab.METRIC_COLUMNS)
    value_col = tab.find_column(header, tab.VALUE_COLUMNS)
    long = bool(metric_col and value_col)
    if any(c and cols[ix[c]].dtype != object for c in (run_col, metric_col if long else None)):
        return None  # names the parser read as numbers lost their spelling ("01"): row by row
    base = name or path.stem
    n = len(cols[0])
    steps, ok = _steps(cols[ix[step_col]])
    rank = None
    if rank_col:
        rank, rank_ok = _steps(cols[ix[rank_col]])
        ok &= rank_ok
    wall = None
    if wall_col:
        wall, wall_status = _numbers(cols[ix[wall_col]])
        wall[wall_status != _NUMBER] = np.nan
    run = None
    if run_col:
        run = _stripped(cols[ix[run_col]])
        run[run == ""] = base
    lines = np.arange(2, n + 2)
    warnings: list[str] = []
    if long:
        values, status = _numbers(cols[ix[value_col]])
        metric = _stripped(cols[ix[metric_col]])
        ok &= (status != _TEXT) & (metric != "")
        if not ok.all():
            warnings.append(bad_lines_warning(str(path), "bad rows", lines[~ok].tolist()))
        keep = np.flatnonzero(ok & (status == _NUMBER))
        codes, names = pd.factorize(metric[keep], sort=False)
        cells = keep
        values = values[keep]
    else:
        special = {step_col, wall_col, rank_col, run_col}
        metrics = [(i, h) for i, h in enumerate(header) if h not in special and h]
        if metrics and all(tab.WANDB_PANEL.match(h) for _, h in metrics):
            return None  # W&B panel export: the row-by-row path
        good = np.flatnonzero(ok)
        parsed = [_numbers(cols[i][good]) for i, _ in metrics]
        text_only = [h for (_, h), (_, st) in zip(metrics, parsed, strict=True)
                     if (st == _TEXT).any() and not (st == _NUMBER).any()]
        if text_only:
            warnings.append(f"{path}: non-numeric column(s) ignored: {', '.join(sorted(text_only))}")
        if not ok.all():
            warnings.append(bad_lines_warning(str(path), "bad rows", lines[~ok].tolist()))
        used = [j for j, (_, h) in enumerate(metrics) if h not in text_only]
        st = np.stack([parsed[j][1] for j in used], axis=1) if used else np.zeros((len(good), 0))
        bad_cells = (st == _TEXT).any(axis=1)
        if bad_cells.any():
            warnings.append(bad_lines_warning(str(path), "non-numeric cells",
                                              lines[good[bad_cells]].tolist()))
        emit = st == _NUMBER  # row-major: a row's cells in header order, as the rows were written
        row, col = np.nonzero(emit)
        values = np.stack([parsed[j][0] for j in used], axis=1)[row, col] if used else np.zeros(0)
        cells = good[row]
        names = [metrics[j][1] for j in used]
        codes = col
    return _group(path, fmt, base, cells, np.asarray(codes), list(names), steps, values, wall, rank,
                  run, warnings)


def _group(path, fmt, base, cells, codes, names, steps, values, wall, rank, run,
           warnings) -> list[RawRun]:
    """RawRuns as from_rows builds them: runs and their series names in first-seen order.
    ``cells`` are the row of each value, ``codes`` index ``names``."""
    if not len(cells):
        return [from_rows(base, str(path), fmt, [], warnings=warnings)]
    if run is None:
        parts = [(base, np.arange(len(cells)))]
    else:
        run_codes, run_names = pd.factorize(run[cells], sort=False)
        order = np.argsort(run_codes, kind="stable")
        bounds = np.searchsorted(run_codes[order], np.arange(len(run_names) + 1))
        parts = [(str(r), order[bounds[i]:bounds[i + 1]]) for i, r in enumerate(run_names)]
    out = []
    for run_name, sel in parts:
        c = codes[sel]
        seen, first = np.unique(c, return_index=True)
        seen = seen[np.argsort(first)]
        remap = np.zeros(len(names), np.int32)
        remap[seen] = np.arange(len(seen), dtype=np.int32)
        rows = cells[sel]
        out.append(RawRun(
            name=run_name, path=str(path), format=fmt, names=tuple(str(names[k]) for k in seen),
            codes=remap[c], steps=steps[rows], values=np.asarray(values, np.float64)[sel],
            wall_time=None if wall is None else wall[rows],
            rank=None if rank is None else rank[rows], warnings=tuple(warnings)))
    return out or [from_rows(base, str(path), fmt, [], warnings=warnings)]
