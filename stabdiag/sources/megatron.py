"""Megatron-LM / Megatron-DeepSpeed stdout: iteration and validation lines.

Layout facts: research/formats.md section 4.1. Every ``<name>: <number> |`` field of an iteration
line is kept under its own spelling (``lm loss``, ``lm-loss``, ``loss scale``, ``grad norm``, ...),
because key sets vary by version; the semantics below are those of ``training_log``:

- ``number of skipped iterations: K`` counts skipped steps *within the log interval* (previous
  logged iteration, this one]. It is kept as is and also spread into ``skipped_step`` 0/1 rows:
  the last K iterations of the interval get 1 (which ones were skipped is not logged; the last K
  puts the mark on the logged iteration, where the loss-scale drop is printed), and a K of 0 gives
  one 0 at the logged iteration. Steps already marked by a DeepSpeed overflow message count
  towards K.
- A missing loss field means the interval's average failed Megatron's ``avg > 0`` check: when
  every iteration of the interval was skipped (K >= interval length) there was no loss to print,
  which is an fp16 skip, not a NaN; otherwise the average was NaN, so a NaN loss is recorded
  (tr8-104B iteration 9027). Only in logs where some line has a loss field.
- ``loss scale: -1.0`` means DeepSpeed owns the scaler: the value is dropped, and the scale comes
  from DeepSpeed's overflow messages instead (see ``deepspeed``).
- Validation lines ``validation loss at iteration N | lm loss value: X | lm loss PPL: Y |`` give
  ``lm loss validation`` / ``lm loss validation ppl`` (Megatron's own TensorBoard tag names).

Noise handled: launcher prefixes, ``time (ms)`` lines, records fused on one line (split) or
printed by several ranks (identical records kept once), hard-wrapped records (joined while the
record does not end in ``|``), ``[...]`` elisions (skipped), tracebacks/SIGTERM (a warning).
Iterations that go back (rollbacks) stay in write order; the loader makes restarts of them.
"""

from __future__ import annotations

import hashlib
import math
import re
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from stabdiag.sources import deepspeed, textlog
from stabdiag.sources.raw import BAD, Lines, RawRun, parse_int, parse_number

FORMAT = "megatron"

SKIPPED_COUNT = "number of skipped iterations"
SKIPPED = deepspeed.SKIPPED
LOSS_SCALE = "loss scale"

_ITER = re.compile(r"\biteration\s+(\d+)\s*/\s*(\d+)\s*\|")
_VALID = re.compile(r"\bvalid(?:ation)? loss at iteration\s+(\d+)\s*\|")
_START = re.compile(_ITER.pattern + "|" + _VALID.pattern)
_SNIFF = re.compile(
    rb"\biteration\s+\d+\s*/\s*\d+\s*\|\s*consumed samples:"
    rb"|valid(?:ation)? loss at iteration\s+\d+\s*\|"
)
_MAX_WRAPS = 4
_MAX_SPREAD = 1024  # skipped-step rows spread from one record's count


@dataclass(frozen=True)
class _Record:
    kind: str  # "iter", "valid" or "overflow"
    step: int
    fields: tuple[tuple[str, float], ...]
    rank: int | None
    overflow: deepspeed.Overflow | None = None


looks_like = textlog.sniffer(_SNIFF, deep=textlog.TEXT_SUFFIXES)


def _fields(body: str) -> tuple[tuple[str, float], ...]:
    out = []
    for chunk in body.split("|"):
        key, sep, val = chunk.rpartition(":")
        key = " ".join(key.split())
        if not sep or not key:
            continue
        v = parse_number(val)
        if isinstance(v, float):
            out.append((key, v))
    return tuple(out)


def _parse(text: str, rank: int | None) -> _Record | None | object:
    """The record in one (unwrapped) line; None when there is none, ``BAD`` for a record whose
    step no int64 holds (it loses this record, counted, not the log)."""
    m = _ITER.search(text)
    if m is not None:
        step = parse_int(m[1])
        return BAD if step is None else _Record("iter", step, _fields(text[m.end() :]), rank)
    m = _VALID.search(text)
    if m is not None:
        fields = []
        for key, v in _fields(text[m.end() :]):
            low = key.lower()
            if low.endswith(" value"):
                fields.append((key[: -len(" value")] + " validation", v))
            elif low.endswith(" ppl"):
                fields.append((key[: -len(" ppl")] + " validation ppl", v))
            else:
                fields.append((key + " validation", v))
        step = parse_int(m[1])
        return BAD if step is None else _Record("valid", step, tuple(fields), rank)
    return None


class _Store:
    """Records in write order, packed in typed arrays (about 40 bytes a record and 12 a field,
    where ``_Record`` objects cost near a kilobyte): a multi-GB log keeps its records, not its
    text. Field names are interned; an overflow's new scale is a field under ``_NEW``."""

    _KINDS = ("iter", "valid", "overflow")

    def __init__(self) -> None:
        self.kind = array("b")
        self.step = array("q")
        self.rank = array("i")  # index into ranks; -1 for no launcher prefix
        self.start = array("q", [0])
        self.fkey = array("i")
        self.fval = array("d")
        self.keys: dict[str, int] = {}
        self.ranks: dict[int, int] = {}
        self.names: list[str] | None = None  # read-back spellings, set by _unwrap_keys

    def add(self, rec: _Record) -> None:
        self.kind.append(self._KINDS.index(rec.kind))
        self.step.append(rec.step)
        self.rank.append(
            -1 if rec.rank is None else self.ranks.setdefault(rec.rank, len(self.ranks))
        )
        fields = rec.fields
        if rec.overflow is not None:
            fields = () if rec.overflow.new is None else ((_NEW, rec.overflow.new),)
        for k, v in fields:
            self.fkey.append(self.keys.setdefault(k, len(self.keys)))
            self.fval.append(v)
        self.start.append(len(self.fkey))

    def __iter__(self) -> Iterator[_Record]:
        """The records back, each key in the spelling ``names`` gives for its code."""
        names = self.names if self.names is not None else list(self.keys)
        ranks = list(self.ranks)
        for i in range(len(self.kind)):
            kind = self._KINDS[self.kind[i]]
            fields = tuple(
                (names[self.fkey[j]], self.fval[j]) for j in range(self.start[i], self.start[i + 1])
            )
            r = self.rank[i]
            rank = None if r < 0 else ranks[r]
            if kind == "overflow":
                new = fields[0][1] if fields else None
                yield _Record(kind, self.step[i], (), rank, deepspeed.Overflow(None, new))
            else:
                yield _Record(kind, self.step[i], fields, rank)


_NEW = "\x00new loss scale"  # no printed key holds a NUL


def _records(lines: Iterable[textlog.Line]) -> tuple[_Store, int, Lines]:
    """Records in write order, the number of duplicate records dropped, and the lines of
    records dropped for an impossible step. Duplicates are told by a 16-byte digest of the
    record's text, so the check costs a few dozen bytes a record, not the record's text."""
    out = _Store()
    seen: set[bytes] = set()
    dups = 0
    bad = Lines()
    pending: list = []  # [text, rank, joins, line number]

    def flush() -> None:
        nonlocal dups
        if not pending:
            return
        body, rank, _, number = pending
        pending.clear()
        key = hashlib.blake2b(
            " ".join(body.split()).encode("utf-8", "surrogatepass"), digest_size=16
        ).digest()
        if key in seen:
            dups += 1
            return
        seen.add(key)
        rec = _parse(body, rank)
        if rec is BAD:
            bad.add(number)
        elif rec is not None:
            out.add(rec)

    for line in lines:
        t = line.text
        starts = [m.start() for m in _START.finditer(t)]
        if (
            pending
            and not starts
            and not pending[0].rstrip().endswith("|")
            and pending[2] < _MAX_WRAPS
            and _continues(t)
        ):
            pending[0] += " " + t
            pending[2] += 1
            continue
        flush()
        ov = deepspeed.parse_overflow(t)
        if ov is not None and not starts:
            out.add(_Record("overflow", -1, (), line.rank, ov))
            continue
        for i, s in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else len(t)
            pending[:] = [t[s:end], line.rank, 0, line.number]
            if i + 1 < len(starts):
                flush()
    flush()
    return out, dups, bad


def _continues(t: str) -> bool:
    """Whether a line is the wrapped tail of a record (not a timer line, elision or log line)."""
    s = t.strip()
    return "|" in s and not s.startswith(("time (ms)", "[", "#", "-----")) and ":" in s


def _unwrap_keys(store: _Store) -> None:
    """Repair keys broken by a hard wrap inside a word (``number of skipped iteratio ns``):
    a key whose letters equal another key's letters takes that key's most common spelling
    (the first seen of equally common ones). Sets the spelling each key code reads back as."""
    uses = array("q", [0]) * len(store.keys)
    for code in store.fkey:
        uses[code] += 1
    counts: dict[str, dict[str, int]] = {}
    for k, code in store.keys.items():
        if k != _NEW:
            counts.setdefault("".join(k.split()).lower(), {})[k] = uses[code]
    best = {sq: max(by, key=by.__getitem__) for sq, by in counts.items()}
    store.names = [k if k == _NEW else best["".join(k.split()).lower()] for k in store.keys]


def _is_loss(key: str) -> bool:
    low = key.lower()
    return (low.endswith("loss") or low.endswith("-loss")) and "scale" not in low


def read(path: Path) -> list[RawRun]:
    log = textlog.TextLog(path)
    records, dups, bad = _records(log)
    _unwrap_keys(records)
    has_loss = False
    megatron_scale = False
    ranks: set[int] = set()
    loss_key = "lm loss"
    for r in records:
        if r.kind != "iter":
            continue
        for k, v in r.fields:
            if _is_loss(k) and not has_loss:
                has_loss, loss_key = True, k
            megatron_scale = megatron_scale or (k == LOSS_SCALE and v != -1.0)
        if r.rank is not None:
            ranks.add(r.rank)
    per_rank = len(ranks) > 1

    cols = textlog.Kept()
    prev = 0  # last logged iteration
    marked: set[int] = set()  # steps marked skipped by overflow messages
    overflow_step = 0
    nan_losses: list[int] = []
    dropped_scale = False

    def add(step: int, name: str, value: float, rank: int | None) -> None:
        cols.add(step, name, value, rank=rank)

    for rec in records:
        if rec.kind == "overflow":
            ov = rec.overflow
            overflow_step = max(overflow_step, prev) + 1
            marked.add(overflow_step)
            add(overflow_step, SKIPPED, 1.0, rec.rank)
            if not megatron_scale and ov is not None and ov.new is not None:
                add(overflow_step, LOSS_SCALE, ov.new, rec.rank)
            continue
        if rec.kind == "valid":
            for k, v in rec.fields:
                add(rec.step, k, v, rec.rank)
            continue
        n = rec.step
        fields = dict(rec.fields)
        start = prev if n > prev else None  # interval (start, n]; unknown after a rollback
        count = fields.get(SKIPPED_COUNT)
        if count is not None and math.isfinite(count):
            k = int(count)
            # at most _MAX_SPREAD rows per record: a damaged count (1e12) must not hang the reader
            lo = max(start if start is not None else n - max(k, 1), n - _MAX_SPREAD) + 1
            already = sum(1 for s in range(lo, n + 1) if s in marked)
            need = max(k - already, 0)
            spread = [s for s in range(n, lo - 1, -1) if s not in marked][:need]
            for s in sorted(spread):
                add(s, SKIPPED, 1.0, rec.rank)
            if k == 0 and n not in marked:
                add(n, SKIPPED, 0.0, rec.rank)
        for key, v in rec.fields:
            if key == LOSS_SCALE and v == -1.0:
                dropped_scale = True
                continue
            add(n, key, v, rec.rank)
        if has_loss and not any(_is_loss(k) for k in fields):
            length = n - start if start is not None else None
            k = int(count) if count is not None and math.isfinite(count) else 0
            all_skipped = k > 0 and (length is None or k >= length)
            if not all_skipped:
                add(n, loss_key, math.nan, rec.rank)
                nan_losses.append(n)
        else:
            loss_key = next((k for k in fields if _is_loss(k)), loss_key)
        prev = n
        overflow_step = n
        marked = {s for s in marked if s > n}

    warnings: list[str] = []
    if bad:
        warnings.append(bad.warning(str(path), "lines with an impossible step"))
    if dups:
        warnings.append(f"{path}: {dups} duplicate records (printed by several ranks) ignored")
    if nan_losses:
        shown = ", ".join(str(s) for s in nan_losses[:5])
        warnings.append(
            f"{path}: no loss printed at iteration {shown}"
            f"{', ...' if len(nan_losses) > 5 else ''} although steps were not all "
            "skipped; Megatron omits a NaN average, so a NaN loss was recorded"
        )
    if log.failure:
        warnings.append(log.failure)
    meta: dict = {}
    if dropped_scale:
        meta["loss_scale"] = "-1.0 printed: the scaler is DeepSpeed's, not Megatron's"
    if ranks and not per_rank:
        meta["launcher_rank"] = next(iter(ranks))
    return [
        cols.build(
            textlog.run_name(path), str(path), FORMAT, rank=per_rank, warnings=warnings, meta=meta
        )
    ]


__all__ = ["BAD", "FORMAT", "looks_like", "read"]
