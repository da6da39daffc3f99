"""What every reader returns before names are mapped: one run's raw series in write order.

Readers stay format-only (bytes -> numbers); naming, restarts and run names are decided once,
in ``stabdiag.sources.load``, for all formats alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stabdiag.sources.aliases import Context

# Cells/values meaning "not logged" (absent, not NaN). NaN/Inf spellings parse via float().
_ABSENT = frozenset({"", "null", "none", "na", "n/a"})


class Bad:
    """Marker for a value that is present but not a number."""


BAD = Bad()


def parse_number(x: Any) -> float | None | Bad:
    """A float (NaN/Inf kept), None for an absent value, or BAD for a non-number."""
    if isinstance(x, bool):
        return float(x)
    if isinstance(x, (int, float)):
        try:
            return float(x)
        except OverflowError:  # a JSON int past float range (1e400 written out)
            return math.inf if x > 0 else -math.inf
    if x is None:
        return None
    if isinstance(x, str):
        s = x.strip()
        if s.lower() in _ABSENT:
            return None
        try:
            return float(s)  # accepts nan, -nan, inf, -inf, Infinity, NaN (any case)
        except ValueError:
            return BAD
    return BAD


def parse_int(digits: str) -> int | None:
    """A step captured as digits by a text reader, or None when it cannot be a step: more than
    19 digits is beyond int64 (and Python refuses int() of over 4300 digits, which used to lose
    the whole log for one bad line)."""
    s = digits.strip()
    if not s or len(s.lstrip("+-0")) > 19:
        return None
    try:
        v = int(s)
    except ValueError:
        return None
    return v if _I64[0] <= v <= _I64[1] else None


def parse_step(x: Any) -> int | None:
    v = parse_number(x)
    if not isinstance(v, float) or not math.isfinite(v) or v != int(v) or abs(v) >= 2.0**63:
        return None  # a step must fit the table's int64 column
    return int(v)


@dataclass(frozen=True)
class RawRun:
    """One run's values in write order; ``codes`` index ``names`` (the raw series names)."""

    name: str                 # base name; made unique across a load by prefixing parent dirs
    path: str
    format: str
    names: tuple[str, ...]
    codes: np.ndarray         # int32
    steps: np.ndarray         # int64
    values: np.ndarray        # float64
    wall_time: np.ndarray | None = None
    rank: np.ndarray | None = None
    warnings: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)
    context: Context = Context()

    def __len__(self) -> int:
        return len(self.steps)


_I64 = (-(1 << 63), (1 << 63) - 1)


def from_rows(
    name: str, path: str, fmt: str, rows: Sequence[tuple[int, str, float]], *,
    wall: Sequence[float] | None = None, rank: Sequence[int] | None = None,
    warnings: Sequence[str] = (), meta: Mapping[str, Any] | None = None,
    context: Context | None = None,
) -> RawRun:
    """Build a RawRun from (step, raw name, value) rows in write order."""
    try:
        steps = np.fromiter((r[0] for r in rows), np.int64, len(rows))
    except OverflowError:  # "iter 99999999999999999999": drop values whose step cannot be stored
        keep = [i for i, r in enumerate(rows) if _I64[0] <= r[0] <= _I64[1]]
        warnings = (*warnings, f"{path}: {len(rows) - len(keep)} values with a step beyond "
                    "the int64 range dropped")
        rows = [rows[i] for i in keep]
        wall = None if wall is None else [wall[i] for i in keep]
        rank = None if rank is None else [rank[i] for i in keep]
        steps = np.fromiter((r[0] for r in rows), np.int64, len(rows))
    index: dict[str, int] = {}
    codes = np.fromiter((index.setdefault(r[1], len(index)) for r in rows), np.int32, len(rows))
    return RawRun(
        name=name, path=path, format=fmt, names=tuple(index), codes=codes,
        steps=steps,
        values=np.fromiter((r[2] for r in rows), np.float64, len(rows)),
        wall_time=None if wall is None else np.asarray(wall, np.float64),
        rank=None if rank is None else np.asarray(rank, np.int64),
        warnings=tuple(warnings), meta=dict(meta or {}), context=context or Context(),
    )


def bad_lines_warning(path: str, what: str, lines: Sequence[int]) -> str:
    """'PATH: N bad rows dropped (lines 3, 9, ...)' - damaged input is reported, never trimmed silently."""
    shown = ", ".join(str(n) for n in lines[:5])
    more = ", ..." if len(lines) > 5 else ""
    return f"{path}: {len(lines)} {what} dropped (line {shown}{more})"
