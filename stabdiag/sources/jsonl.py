"""JSON Lines metric logs: one object per line, ``{"step": 1, "loss": 1.0, "grad_norm": NaN}``.

Python's json accepts bare NaN/Infinity; ``null`` is "not logged"; strings are parsed as numbers
when they are ("nan", "1e-3"), otherwise the key is ignored and named in a warning. Nested
objects are flattened with ``/``. A long form (``metric``/``value`` keys) is accepted too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stabdiag.errors import SourceError
from stabdiag.sources import tabular as tab
from stabdiag.sources.raw import BAD, RawRun, bad_lines_warning, from_rows, parse_number, parse_step

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
    return tuple(_key(obj, c) for c in (tab.STEP_COLUMNS, tab.RANK_COLUMNS, tab.RUN_COLUMNS,
                                        tab.WALL_COLUMNS, tab.METRIC_COLUMNS, tab.VALUE_COLUMNS))


def read(path: Path, fmt: str = FORMAT) -> list[RawRun]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(path, "a JSON Lines text file", f"unreadable text ({exc})") from None
    by_run: dict[str, dict[str, list]] = {}
    bad: list[int] = []
    no_step: list[int] = []
    text_keys: set[str] = set()
    n_obj = 0
    has_wall = False
    layouts: dict[tuple[str, ...], tuple[str | None, ...]] = {}
    stem = path.stem
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):  # bad JSON, >4300-digit ints, [[[[... nesting
            bad.append(lineno)
            continue
        if not isinstance(obj, dict):
            bad.append(lineno)
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
            no_step.append(lineno)
            continue
        step = obj[step_key]
        if type(step) is not int or not -_EXACT <= step <= _EXACT:  # else parse_step's own answer
            step = parse_step(step)
        rank = parse_step(obj[rank_key]) if rank_key else None
        if step is None or (rank_key and rank is None):
            bad.append(lineno)
            continue
        run = str(obj[run_key]) if run_key else stem
        has_wall = has_wall or wall_key is not None
        wall = parse_number(obj[wall_key]) if wall_key else None
        wall = wall if isinstance(wall, float) else float("nan")
        if metric_key and value_key:
            items, skip = [(str(obj[metric_key]), obj[value_key])], ()
        else:
            skip = {step_key, rank_key, run_key, wall_key}
            nested = dict in map(type, obj.values())
            items = _flat(obj) if nested else obj.items()
        d = by_run.setdefault(run, {"rows": [], "wall": [], "rank": []})
        rows, walls, ranks = d["rows"], d["wall"], d["rank"]
        for k, raw in items:
            if k in skip:
                continue
            v = raw if type(raw) is float else parse_number(raw)  # a JSON float is its own value
            if v is None:
                continue
            if v is BAD:
                text_keys.add(k)
                continue
            rows.append((step, k, v))
            walls.append(wall)
            ranks.append(rank)
    if n_obj == 0 and bad:
        raise SourceError(path, "JSON Lines (one JSON object per line)",
                          f"no parsable line ({len(bad)} bad)")
    warnings = []
    if bad:
        warnings.append(bad_lines_warning(str(path), "bad lines", bad))
    if no_step:
        warnings.append(bad_lines_warning(str(path), "lines without a step key", no_step))
    if text_keys:
        warnings.append(f"{path}: non-numeric keys ignored: {', '.join(sorted(text_keys)[:8])}")
    out = []
    for run, d in by_run.items():
        has_rank = any(r is not None for r in d["rank"])
        out.append(from_rows(run, str(path), fmt, d["rows"], wall=d["wall"] if has_wall else None,
                             rank=[r if r is not None else -1 for r in d["rank"]] if has_rank else None,
                             warnings=warnings))
    return out or [from_rows(path.stem, str(path), fmt, [], warnings=warnings)]
