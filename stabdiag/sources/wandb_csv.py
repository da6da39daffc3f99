"""W&B UI panel CSV exports: ``"Step","<run> - <metric>","<run> - <metric>__MIN",...``.

Layout facts: research/formats.md section 8.3. The first column is the panel's x-axis (``Step``,
``_step``, ``epoch``, ...) and is the step; every ``<run> - <metric>`` column is one series of one
run, so the file gives one RawRun per run name (runs sit side by side). The ``__MIN``/``__MAX``
columns are the panel's bucket envelopes of the sampled series, not logged values, and are
ignored (their count goes to ``meta``). Empty cells mean the run did not log at that step. The
export is sampled (irregular steps), and the last line may lack a newline.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from stabdiag.errors import SourceError
from stabdiag.sources.raw import BAD, RawRun, bad_lines_warning, from_rows, parse_number

FORMAT = "wandb-csv"
_SEP = " - "
_ENVELOPE = ("__MIN", "__MAX")


def _header(head: str) -> list[str] | None:
    first = head.split("\n", 1)[0].lstrip("\ufeff").strip()
    if not first:
        return None
    try:
        return next(csv.reader([first]))
    except (csv.Error, StopIteration):
        return None


def looks_like(path: Path, head: str) -> bool:
    cols = _header(head)
    if not cols or len(cols) < 2 or _SEP in cols[0]:
        return False
    return all(_SEP in c for c in cols[1:])


def read(path: Path) -> list[RawRun]:
    try:
        text = path.read_bytes().decode("utf-8", errors="replace").lstrip("\ufeff")
    except OSError as exc:
        raise SourceError(path, "a W&B CSV export", str(exc)) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        cols = next(reader, None)
    except csv.Error as exc:
        raise SourceError(path, "a W&B CSV export", f"unreadable CSV ({exc})") from None
    if not cols or len(cols) < 2 or not all(_SEP in c for c in cols[1:]):
        raise SourceError(path, "a W&B CSV export header ('Step','<run> - <metric>', ...)",
                          f"header {cols!r:.80}")
    targets: list[tuple[int, str, str]] = []  # (column, run, metric)
    envelopes = 0
    for i, c in enumerate(cols[1:], start=1):
        if c.endswith(_ENVELOPE):
            envelopes += 1
            continue
        run, _, metric = c.rpartition(_SEP)
        targets.append((i, run, metric))
    per_run: dict[str, list[tuple[int, str, float]]] = {run: [] for _, run, _ in targets}
    bad: list[int] = []
    stopped = ""
    rows: list[list[str]] = []
    try:
        rows.extend(reader)
    except csv.Error as exc:  # a cell over the field limit: keep the rows before it
        stopped = f"{path}: stopped reading at line {reader.line_num} ({exc})"
    for lineno, row in enumerate(rows, start=2):
        if not row:
            continue
        step = parse_number(row[0])
        if not isinstance(step, float) or not math.isfinite(step):
            bad.append(lineno)
            continue
        for i, run, metric in targets:
            if i >= len(row):
                continue
            v = parse_number(row[i])
            if v is None:
                continue
            if v is BAD:
                bad.append(lineno)
                continue
            per_run[run].append((int(step), metric, v))  # type: ignore[arg-type]
    warnings = [bad_lines_warning(str(path), "rows with a bad step or value", bad)] if bad else []
    warnings += [stopped] if stopped else []
    meta = {"x_axis": cols[0], "envelope_columns_ignored": envelopes}
    return [from_rows(run, str(path), FORMAT, rows, warnings=warnings, meta=meta)
            for run, rows in per_run.items()]
