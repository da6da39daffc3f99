"""W&B run directories: the binary ``run-<id>.wandb`` history, read without the wandb package.

Layout facts: research/formats.md section 8.2 (verified on real_logs/wandb_offline_lion). The
file is a 7-byte header (``:W&B`` + 0xBEE1 + version) then LevelDB-log records in 32 KiB blocks
(crc32, uint16 length, type FULL/FIRST/MIDDLE/LAST); each payload is a protobuf
``wandb.internal.Record``. Only a few fields are needed, so the protobuf wire format is decoded
here (about 30 lines) instead of depending on wandb's generated classes, which change between
releases:

- ``Record.history`` (field 2) -> ``HistoryRecord.item`` (1) -> ``HistoryItem``
  {``key`` (1), ``nested_key`` (2, joined with ``/``), ``value_json`` (16)}; ``HistoryRecord.step``
  (2) -> ``num`` (1). Values are JSON strings (``'NaN'``, ``'Infinity'`` included).
- ``Record.run`` (17) -> ``run_id`` (1), ``project`` (3), ``display_name`` (8), for the name.

The step of a row is its ``_step`` item (else ``HistoryStep.num``, else the row index); ``_runtime``
and ``_timestamp`` become wall time, not series. Files copied mid-run end inside a block or a
record: everything before the break is kept and a warning says where it stopped; a bad CRC stops
reading at that record for the same reason.
"""

from __future__ import annotations

import io
import json
import math
import re
import struct
import zlib
from pathlib import Path

from stabdiag.errors import SourceError
from stabdiag.sources.raw import RawRun, RunColumns, parse_number

FORMAT = "wandb-offline"

MAGIC = b":W&B"
_HEADER = 7
_BLOCK = 32 * 1024
_RUN_DIR = re.compile(r"^(?:offline-)?run-\d{8}_\d{6}-\w+$")
_INTERNAL = frozenset({"_step", "_runtime", "_timestamp"})


def looks_like(path: Path, head: str) -> bool:
    if path.is_dir():
        return (
            bool(_RUN_DIR.match(path.name))
            and any(path.glob("*.wandb"))
            or any(p.suffix == ".wandb" for p in path.glob("*run-*/*.wandb"))
        )
    return path.suffix == ".wandb" or head.startswith(MAGIC.decode())


def _varint(b: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while shift < 70:  # at most 10 bytes: a run of 0xFF is damage, not a huge number
        if i >= len(b):
            raise ValueError("truncated varint")
        x = b[i]
        i += 1
        result |= (x & 0x7F) << shift
        shift += 7
        if x < 0x80:
            return result, i
    raise ValueError("varint longer than 10 bytes")


def fields(b: bytes) -> list[tuple[int, int | bytes]]:
    """Top-level (field number, value) pairs of one protobuf message (wire types 0, 1, 2, 5)."""
    out: list[tuple[int, int | bytes]] = []
    i = 0
    while i < len(b):
        key, i = _varint(b, i)
        num, wire = key >> 3, key & 7
        if num == 0:  # invalid in protobuf: damage (and a run of zero bytes would loop per byte)
            raise ValueError("field number 0")
        if wire == 0:
            v, i = _varint(b, i)
            out.append((num, v))
        elif wire == 2:
            n, i = _varint(b, i)
            if i + n > len(b):
                raise ValueError("truncated field")
            out.append((num, b[i : i + n]))
            i += n
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


MAX_RECORD = 64 << 20  # a record split over blocks larger than this is damage, not history


class _Records:
    """Payloads of the LevelDB-log framing, read from a file a block at a time (memory: one
    block plus the record being joined, never the file). ``stopped`` says why reading ended
    early (None if it did not); ``oversized`` counts records over MAX_RECORD (dropped)."""

    def __init__(self, fh) -> None:  # noqa: ANN001 - a binary file after the 7-byte header
        self.fh = fh
        self.stopped: str | None = None
        self.oversized = 0

    def __iter__(self):  # noqa: ANN204, C901 - yields bytes
        base = 0  # file offset of the current block
        partial: list[bytes] = []  # pieces of a multi-block record, joined once (linear)
        size = 0
        too_big = False
        first = True
        while True:
            block = self.fh.read(_BLOCK - (_HEADER if first else 0))
            if not block:
                break
            pos = _HEADER if first else 0  # offsets within the block's 32 KiB
            if first:
                block = b"\0" * _HEADER + block
                first = False
            end = len(block)
            while pos < end:
                if _BLOCK - pos < 7:
                    break
                if pos + 7 > end:
                    self.stopped = f"file ends inside a record header at byte {base + pos}"
                    return
                crc, length, kind = struct.unpack_from("<IHB", block, pos)
                if kind == 0 and length == 0:
                    break  # zero padding to the end of the block
                payload = block[pos + 7 : pos + 7 + length]
                if len(payload) < length:
                    self.stopped = f"file ends inside a record at byte {base + pos}"
                    return
                if zlib.crc32(bytes([kind]) + payload) & 0xFFFFFFFF != crc:
                    self.stopped = f"bad checksum at byte {base + pos}"
                    return
                pos += 7 + length
                if kind == 1:
                    yield payload
                elif kind == 2:
                    partial, size, too_big = [payload], len(payload), False
                elif kind in (3, 4):
                    size += len(payload)
                    if size > MAX_RECORD:
                        if not too_big:
                            self.oversized += 1
                        partial, too_big = [], True
                    if not too_big:
                        partial.append(payload)
                    if kind == 4:
                        if not too_big:
                            yield b"".join(partial)
                        partial, size, too_big = [], 0, False
            if len(block) < _BLOCK:
                break
            base += _BLOCK
        if partial or too_big:
            self.stopped = "file ends in the middle of a multi-block record"


def records(data: bytes) -> tuple[list[bytes], str | None]:
    """Payloads of the LevelDB-log framing of a whole file's bytes, and why reading stopped
    early (None if it did not)."""
    stream = _Records(io.BytesIO(data[_HEADER:]))
    return list(stream), stream.stopped


def _find_file(path: Path) -> Path:
    if path.is_file():
        return path
    found = sorted(path.glob("*.wandb")) or sorted(path.glob("*run-*/*.wandb"))
    if not found:
        raise SourceError(path, "a W&B run directory with a run-<id>.wandb file", "none")
    return found[0]


def _text(v: int | bytes) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _read_record(index: int, payload: bytes, meta: dict) -> list[tuple[int, str, float, float]]:
    """One record's (step, key, value, wall time) rows: all or none (a damaged nested field
    raises ValueError before anything is returned, so one bad field costs its record, never the
    run)."""
    new_rows: list[tuple[int, str, float, float]] = []
    for num, val in fields(payload):
        if num == 17 and isinstance(val, bytes):
            run = {n: _text(v) for n, v in fields(val) if n in (1, 3, 8)}
            meta.update(
                {
                    "run_id": run.get(1, ""),
                    "project": run.get(3, ""),
                    "display_name": run.get(8, ""),
                }
            )
        if num != 2 or not isinstance(val, bytes):
            continue
        items: dict[str, float] = {}
        step_num: int | None = None
        for n, v in fields(val):
            if n == 2 and isinstance(v, bytes):
                step_num = next(
                    (int(s) for k, s in fields(v) if k == 1 and isinstance(s, int)), None
                )
            if n != 1 or not isinstance(v, bytes):
                continue
            parts = dict((k, s) for k, s in fields(v) if k in (1, 16))
            nested = [_text(s) for k, s in fields(v) if k == 2]
            key = "/".join(nested) if nested else _text(parts.get(1, b""))
            try:
                value = parse_number(json.loads(_text(parts.get(16, b"null"))))
            except (ValueError, OverflowError, RecursionError):  # bad JSON, huge ints
                continue
            if isinstance(value, float):
                items[key] = value
        step_v = items.get("_step")
        step = (
            int(step_v)
            if step_v is not None and math.isfinite(step_v)
            else (step_num if step_num is not None else index)
        )
        ts = items.get("_timestamp", math.nan)
        new_rows += [(step, key, value, ts) for key, value in items.items() if key not in _INTERNAL]
    return new_rows


_I64 = (-(1 << 63), (1 << 63) - 1)


def read_file(file: Path) -> RawRun:
    """Read the history a block at a time: memory follows the values kept, not the file."""
    with open(file, "rb") as fh:
        if not fh.read(_HEADER).startswith(MAGIC):
            raise SourceError(file, "a W&B .wandb file (starting with ':W&B')", "another header")
        stream = _Records(fh)
        cols = RunColumns(wall=True)
        meta: dict = {}
        bad = beyond = n = 0
        last = None
        for index, payload in enumerate(stream):
            n += 1
            try:
                rows = _read_record(index, payload, meta)
            except ValueError:  # a damaged record (or nested field) costs that record only
                bad += 1
                continue
            for step, key, value, ts in rows:
                if not _I64[0] <= step <= _I64[1]:
                    beyond += 1
                    continue
                cols.add(step, key, value, ts)
                last = step
    warnings = []
    if stream.stopped:
        warnings.append(
            f"{file}: history truncated ({stream.stopped}); kept {n} records up to step {last}"
        )
    if bad or stream.oversized:
        warnings.append(
            f"{file}: {bad + stream.oversized} undecodable records dropped"
            + (f" ({stream.oversized} over {MAX_RECORD >> 20} MB)" if stream.oversized else "")
        )
    if beyond:
        warnings.append(f"{file}: {beyond} values with a step beyond the int64 range dropped")
    name = meta.get("display_name") or meta.get("run_id") or file.stem.removeprefix("run-")
    return cols.build(name, str(file), FORMAT, warnings=warnings, meta=meta)


def read(path: Path) -> list[RawRun]:
    if path.is_dir() and not any(path.glob("*.wandb")):
        files = sorted(path.glob("*run-*/*.wandb"))
        return [read_file(f) for f in files]
    return [read_file(_find_file(path))]
