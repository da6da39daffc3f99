"""Generic CSV: wide (a step column + metric columns) or long (step, metric, value[, ...]).

Cells: empty/null = not logged; ``nan``/``inf``/``-Infinity`` kept as numbers. A column with no
number at all (e.g. a time string) is ignored with a warning; a row whose step or cell is damaged
is dropped and counted (how many, first line numbers) - never silently.
"""

from __future__ import annotations

import csv as _csv
from collections import defaultdict
from pathlib import Path

from stabdiag.errors import SourceError
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
            # an unterminated quote swallows every later line into one cell: read quotes as text
            header, rows = _rows(path, enc, _csv.QUOTE_NONE)
            header = [h[1:-1] if len(h) > 1 and h[0] == h[-1] == '"' else h for h in header or []]
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


def read(path: Path, fmt: str = FORMAT, name: str | None = None) -> list[RawRun]:
    header, rows = read_rows(path)
    step_col = tab.find_column(header, tab.STEP_COLUMNS)
    if step_col is None:
        raise SourceError(path, f"a CSV with a step column ({', '.join(tab.STEP_COLUMNS[:6])}, ...)",
                          f"columns {header[:6]}")
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
    out = []
    for run, d in by_run.items():
        wall = [w if isinstance(w, float) else float("nan") for w in d["wall"]]
        out.append(from_rows(run, str(path), fmt, d["rows"], wall=wall if wall_col else None,
                             rank=d["rank"] if rank_col else None, warnings=warnings))
    return out or [from_rows(base, str(path), fmt, [], warnings=warnings)]
