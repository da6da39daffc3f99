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
import math
from pathlib import Path

from stabdiag.errors import SourceError
from stabdiag.sources.raw import BAD, Lines, RawRun, RunColumns, capped_lines, parse_number

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
    """Read row by row (memory follows the values kept, not the file); a "line" over
    raw.MAX_LINE is refused at once with one line."""
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as fh:
            return _read(path, fh)
    except OSError as exc:
        raise SourceError(path, "a W&B CSV export", str(exc)) from None


def _read(path: Path, fh) -> list[RawRun]:  # noqa: ANN001 - a text file
    lines = capped_lines(fh, path, "a W&B CSV export")
    first = next(lines, "")
    reader = csv.reader(_chain(first.lstrip("\ufeff"), lines))
    try:
        cols = next(reader, None)
    except csv.Error as exc:
        raise SourceError(path, "a W&B CSV export", f"unreadable CSV ({exc})") from None
    if not cols or len(cols) < 2 or not all(_SEP in c for c in cols[1:]):
        raise SourceError(
            path, "a W&B CSV export header ('Step','<run> - <metric>', ...)", f"header {cols!r:.80}"
        )
    targets: list[tuple[int, str, str]] = []  # (column, run, metric)
    envelopes = 0
    for i, c in enumerate(cols[1:], start=1):
        if c.endswith(_ENVELOPE):
            envelopes += 1
            continue
        run, _, metric = c.rpartition(_SEP)
        targets.append((i, run, metric))
    per_run: dict[str, RunColumns] = {run: RunColumns() for _, run, _ in targets}
    bad = Lines()
    beyond: dict[str, int] = {}  # values whose step does not fit int64, per run
    stopped = ""
    try:
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            step = parse_number(row[0])
            if not isinstance(step, float) or not math.isfinite(step):
                bad.add(lineno)
                continue
            step = int(step)
            for i, run, metric in targets:
                if i >= len(row):
                    continue
                v = parse_number(row[i])
                if v is None:
                    continue
                if v is BAD:
                    bad.add(lineno)
                    continue
                if not _I64[0] <= step <= _I64[1]:
                    beyond[run] = beyond.get(run, 0) + 1
                    continue
                per_run[run].add(step, metric, v)  # type: ignore[arg-type]
    except csv.Error as exc:  # a cell over the field limit: keep the rows before it
        stopped = f"{path}: stopped reading at line {reader.line_num} ({exc})"
    warnings = [bad.warning(str(path), "rows with a bad step or value")] if bad else []
    warnings += [stopped] if stopped else []
    meta = {"x_axis": cols[0], "envelope_columns_ignored": envelopes}
    return [
        cols_.build(
            run,
            str(path),
            FORMAT,
            meta=meta,
            warnings=(
                *warnings,
                *(
                    [f"{path}: {beyond[run]} values with a step beyond the int64 range dropped"]
                    if run in beyond
                    else []
                ),
            ),
        )
        for run, cols_ in per_run.items()
    ]


_I64 = (-(1 << 63), (1 << 63) - 1)


def _chain(first: str, rest):  # noqa: ANN001, ANN202
    if first:
        yield first
    yield from rest
