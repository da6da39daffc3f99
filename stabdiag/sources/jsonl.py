"""JSON Lines metric logs: one object per line, ``{"step": 1, "loss": 1.0, "grad_norm": NaN}``.

Python's json accepts bare NaN/Infinity; ``null`` is "not logged"; strings are parsed as numbers
when they are ("nan", "1e-3"), otherwise the key is ignored and named in a warning. Nested
objects are flattened with ``/``. A long form (``metric``/``value`` keys) is accepted too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stabdiag.errors import SourceError
from stabdiag.sources import tabular as tab
from stabdiag.sources.raw import (
    BAD,
    Lines,
    RawRun,
    RunColumns,
    capped_lines,
    from_rows,
    parse_number,
    parse_step,
)

FORMAT = "jsonl"


def _flat(obj: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in obj.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}/")
        else:
            yield f"{prefix}{k}", v


def _key(obj: dict, candidates: tuple[str, ...]) -> str | None:
    lower = {k.lower(): k for k in obj}
    return next((lower[c] for c in candidates if c in lower), None)


_EXACT = 2**53  # a JSON int step up to this is its own float, so parse_step returns it as is
_MAX_LAYOUTS = 1024  # distinct key sets remembered (a log has a handful)


def _layout(obj: dict) -> tuple[str | None, ...]:
    """The step, rank, run, wall-time, metric and value keys of an object (None: absent)."""
    return tuple(
        _key(obj, c)
        for c in (
            tab.STEP_COLUMNS,
            tab.RANK_COLUMNS,
            tab.RUN_COLUMNS,
            tab.WALL_COLUMNS,
            tab.METRIC_COLUMNS,
            tab.VALUE_COLUMNS,
        )
    )


def read(path: Path, fmt: str = FORMAT) -> list[RawRun]:
    """Read line by line: memory follows the values kept, not the file; a "line" over
    raw.MAX_LINE (a sparse file, binary junk) is refused at once with one line."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return _read(path, fmt, capped_lines(fh, path, _EXPECTED))
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(path, "a JSON Lines text file", f"unreadable text ({exc})") from None


_EXPECTED = "a JSON Lines text file"


def _split(lines):  # noqa: ANN001, ANN202 - splitlines() semantics over a line stream
    """The lines str.splitlines() would give: a stream read with newline="" ends lines at
    \n, \r and \r\n only, splitlines also at \v, \f, \x1c-\x1e, \x85, U+2028/9."""
    for line in lines:
        yield from line.splitlines()


def _read(path: Path, fmt: str, lines) -> list[RawRun]:  # noqa: ANN001
    by_run: dict[str, RunColumns] = {}
    bad = Lines()
    no_step = Lines()
    text_keys: set[str] = set()
    n_obj = 0
    has_wall = False
    layouts: dict[tuple[str, ...], tuple[str | None, ...]] = {}
    stem = path.stem
    for lineno, line in enumerate(_split(lines), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):  # bad JSON, >4300-digit ints, [[[[... nesting
            bad.add(lineno)
            continue
        if not isinstance(obj, dict):
            bad.add(lineno)
            continue
        n_obj += 1
        keys = tuple(obj)
        layout = layouts.get(keys)
        if layout is None:  # which key is the step, rank, ... depends only on the keys
            layout = _layout(obj)
            if len(layouts) < _MAX_LAYOUTS:
                layouts[keys] = layout
        step_key, rank_key, run_key, wall_key, metric_key, value_key = layout
        if step_key is None:
            no_step.add(lineno)
            continue
        step = obj[step_key]
        if type(step) is not int or not -_EXACT <= step <= _EXACT:  # else parse_step's own answer
            step = parse_step(step)
        rank = parse_step(obj[rank_key]) if rank_key else None
        if step is None or (rank_key and rank is None):
            bad.add(lineno)
            continue
        run = str(obj[run_key]) if run_key else stem
        has_wall = has_wall or wall_key is not None
        wall = parse_number(obj[wall_key]) if wall_key else None
        wall = wall if isinstance(wall, float) else math.nan
        if metric_key and value_key:
            items, skip = [(str(obj[metric_key]), obj[value_key])], ()
        else:
            skip = {step_key, rank_key, run_key, wall_key}
            nested = dict in map(type, obj.values())
            items = _flat(obj) if nested else obj.items()
        cols = by_run.get(run)
        if cols is None:
            cols = by_run[run] = RunColumns(wall=True)
        add = cols.add
        for k, raw in items:
            if k in skip:
                continue
            v = raw if type(raw) is float else parse_number(raw)  # a JSON float is its own value
            if v is None:
                continue
            if v is BAD:
                text_keys.add(k)
                continue
            add(step, k, v, wall, rank)
    if n_obj == 0 and bad:
        raise SourceError(
            path, "JSON Lines (one JSON object per line)", f"no parsable line ({bad.count} bad)"
        )
    warnings = []
    if bad:
        warnings.append(bad.warning(str(path), "bad lines"))
    if no_step:
        warnings.append(no_step.warning(str(path), "lines without a step key"))
    if text_keys:
        warnings.append(f"{path}: non-numeric keys ignored: {', '.join(sorted(text_keys)[:8])}")
    out = [
        cols.build(run, str(path), fmt, wall=has_wall, warnings=warnings)
        for run, cols in by_run.items()
    ]
    return out or [from_rows(path.stem, str(path), fmt, [], warnings=warnings)]
