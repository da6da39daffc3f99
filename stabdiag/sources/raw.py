"""What every reader returns before names are mapped: one run's raw series in write order.

Readers stay format-only (bytes -> numbers); naming, restarts and run names are decided once,
in ``stabdiag.sources.load``, for all formats alike.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, AnyStr

import numpy as np

from stabdiag.errors import SourceError
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

    name: str  # base name; made unique across a load by prefixing parent dirs
    path: str
    format: str
    names: tuple[str, ...]
    codes: np.ndarray  # int32
    steps: np.ndarray  # int64
    values: np.ndarray  # float64
    wall_time: np.ndarray | None = None
    rank: np.ndarray | None = None
    warnings: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)
    context: Context = Context()

    def __len__(self) -> int:
        return len(self.steps)


_I64 = (-(1 << 63), (1 << 63) - 1)


def from_rows(
    name: str,
    path: str,
    fmt: str,
    rows: Sequence[tuple[int, str, float]],
    *,
    wall: Sequence[float] | None = None,
    rank: Sequence[int] | None = None,
    warnings: Sequence[str] = (),
    meta: Mapping[str, Any] | None = None,
    context: Context | None = None,
) -> RawRun:
    """Build a RawRun from (step, raw name, value) rows in write order."""
    try:
        steps = np.fromiter((r[0] for r in rows), np.int64, len(rows))
    except OverflowError:  # "iter 99999999999999999999": drop values whose step cannot be stored
        keep = [i for i, r in enumerate(rows) if _I64[0] <= r[0] <= _I64[1]]
        warnings = (
            *warnings,
            f"{path}: {len(rows) - len(keep)} values with a step beyond the int64 range dropped",
        )
        rows = [rows[i] for i in keep]
        wall = None if wall is None else [wall[i] for i in keep]
        rank = None if rank is None else [rank[i] for i in keep]
        steps = np.fromiter((r[0] for r in rows), np.int64, len(rows))
    index: dict[str, int] = {}
    codes = np.fromiter((index.setdefault(r[1], len(index)) for r in rows), np.int32, len(rows))
    return RawRun(
        name=name,
        path=path,
        format=fmt,
        names=tuple(index),
        codes=codes,
        steps=steps,
        values=np.fromiter((r[2] for r in rows), np.float64, len(rows)),
        wall_time=None if wall is None else np.asarray(wall, np.float64),
        rank=None if rank is None else np.asarray(rank, np.int64),
        warnings=tuple(warnings),
        meta=dict(meta or {}),
        context=context or Context(),
    )


def bad_lines_warning(path: str, what: str, lines: Sequence[int], count: int | None = None) -> str:
    """'PATH: N bad rows dropped (lines 3, 9, ...)' - damaged input is reported, never trimmed
    silently. ``count``: how many in all when ``lines`` holds only the first few."""
    count = len(lines) if count is None else count
    shown = ", ".join(str(n) for n in lines[:5])
    more = ", ..." if count > 5 else ""
    return f"{path}: {count} {what} dropped (line {shown}{more})"


# --------------------------------------------------------------------------- streaming helpers
# Readers go through a file a line (or a block) at a time and keep only the numbers, so memory
# follows the values kept, not the file (issue 13 R1: a 2 GB CSV read whole peaked at 17 GB).

MAX_LINE = 16 << 20  # characters: no log line is this long; a sparse file or binary junk is


def capped_lines(
    fh: IO[AnyStr], path: object, expected: str, limit: int | None = None
) -> Iterator[AnyStr]:
    """The lines of ``fh`` (text or binary), each read with at most ``limit`` (default MAX_LINE)
    characters in memory. A longer "line" (a sparse file of zero bytes, one line of gigabytes)
    is refused at once with a SourceError naming the file, instead of being read whole first."""
    limit = limit or MAX_LINE
    n = 0
    while True:
        line = fh.readline(limit)
        if not line:
            return
        n += 1
        if len(line) >= limit and line[-1:] not in ("\n", "\r", b"\n", b"\r"):
            size = f"{limit >> 20} MB" if limit >= 1 << 20 else f"{limit} characters"
            raise SourceError(
                path, expected, f"line {n} is over {size} long (no line end in it; not a text log)"
            )
        yield line


class Lines:
    """Line numbers of dropped rows: how many and the first few (all a warning shows), in
    constant memory however many there are."""

    __slots__ = ("count", "first")

    def __init__(self) -> None:
        self.count = 0
        self.first: list[int] = []

    def add(self, line: int) -> None:
        self.count += 1
        if len(self.first) < 5:
            self.first.append(line)

    def extend(self, lines: Sequence[int]) -> None:
        self.count += len(lines)
        if len(self.first) < 5:
            self.first += [int(x) for x in lines[: 5 - len(self.first)]]

    def __bool__(self) -> bool:
        return self.count > 0

    def warning(self, path: str, what: str) -> str:
        return bad_lines_warning(path, what, self.first, self.count)


class RunColumns:
    """One run's values in write order, kept in typed growth buffers (``array``): 28 to 44 bytes
    a value, where a list of (step, name, value) tuples costs about 150. ``build`` gives the
    RawRun that ``from_rows`` would give for the same rows."""

    __slots__ = ("index", "codes", "steps", "values", "wall", "rank")

    def __init__(self, wall: bool = False) -> None:
        self.index: dict[str, int] = {}
        self.codes = array("i")
        self.steps = array("q")
        self.values = array("d")
        self.wall = array("d") if wall else None
        self.rank: array | None = None  # created at the first value that has a rank

    def add(
        self, step: int, name: str, value: float, wall: float = math.nan, rank: int | None = None
    ) -> None:
        code = self.index.get(name)
        if code is None:
            code = self.index[name] = len(self.index)
        self.codes.append(code)
        self.steps.append(step)
        self.values.append(value)
        if self.wall is not None:
            self.wall.append(wall)
        if rank is not None and self.rank is None:
            self.rank = array("q", [-1]) * (len(self.steps) - 1)
        if self.rank is not None:
            self.rank.append(-1 if rank is None else rank)

    def __len__(self) -> int:
        return len(self.steps)

    def build(
        self,
        name: str,
        path: str,
        fmt: str,
        *,
        wall: bool | None = None,
        rank: bool | None = None,
        warnings: Sequence[str] = (),
        meta: Mapping[str, Any] | None = None,
        context: Context | None = None,
    ) -> RawRun:
        """``wall``/``rank``: force the column on (NaN / -1 where absent) or off; None keeps it
        when a value had one."""
        n = len(self.steps)
        walls = None
        if wall or (wall is None and self.wall is not None):
            walls = _np(self.wall, np.float64) if self.wall is not None else np.full(n, np.nan)
        ranks = None
        if rank or (rank is None and self.rank is not None):
            ranks = _np(self.rank, np.int64) if self.rank is not None else np.full(n, -1, np.int64)
        return RawRun(
            name=name,
            path=path,
            format=fmt,
            names=tuple(self.index),
            codes=_np(self.codes, np.int32),
            steps=_np(self.steps, np.int64),
            values=_np(self.values, np.float64),
            wall_time=walls,
            rank=ranks,
            warnings=tuple(warnings),
            meta=dict(meta or {}),
            context=context or Context(),
        )


def _np(buf: array, dtype: type) -> np.ndarray:
    """The buffer as an array without a copy (the array keeps the memory alive)."""
    return np.frombuffer(buf, dtype=dtype) if len(buf) else np.zeros(0, dtype)
