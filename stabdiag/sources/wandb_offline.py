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

import json
import math
import re
import struct
import zlib
from pathlib import Path

from stabdiag.errors import SourceError
from stabdiag.sources.raw import RawRun, from_rows, parse_number

FORMAT = "wandb-offline"

MAGIC = b":W&B"
_HEADER = 7
_BLOCK = 32 * 1024
_RUN_DIR = re.compile(r"^(?:offline-)?run-\d{8}_\d{6}-\w+$")
_INTERNAL = frozenset({"_step", "_runtime", "_timestamp"})


def looks_like(path: Path, head: str) -> bool:
    if path.is_dir():
        return bool(_RUN_DIR.match(path.name)) and any(path.glob("*.wandb")) or \
            any(p.suffix == ".wandb" for p in path.glob("*run-*/*.wandb"))
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
            out.append((num, b[i:i + n]))
            i += n
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def records(data: bytes) -> tuple[list[bytes], str | None]:
    """Payloads of the LevelDB-log framing, and why reading stopped early (None if it did not)."""
    out: list[bytes] = []
    pos, partial = _HEADER, []  # pieces of a multi-block record, joined once (linear)
    while pos < len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:
            pos += left
            continue
        if pos + 7 > len(data):
            return out, f"file ends inside a record header at byte {pos}"
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            pos += left  # zero padding to the end of the block
            continue
        payload = data[pos + 7:pos + 7 + length]
        if len(payload) < length:
            return out, f"file ends inside a record at byte {pos}"
        if zlib.crc32(bytes([kind]) + payload) & 0xFFFFFFFF != crc:
            return out, f"bad checksum at byte {pos}"
        pos += 7 + length
        if kind == 1:
            out.append(payload)
        elif kind == 2:
            partial = [payload]
        elif kind == 3:
            partial.append(payload)
        elif kind == 4:
            partial.append(payload)
            out.append(b"".join(partial))
            partial = []
    if partial:
        return out, "file ends in the middle of a multi-block record"
    return out, None


def _find_file(path: Path) -> Path:
    if path.is_file():
        return path
    found = sorted(path.glob("*.wandb")) or sorted(path.glob("*run-*/*.wandb"))
    if not found:
        raise SourceError(path, "a W&B run directory with a run-<id>.wandb file", "none")
    return found[0]


def _text(v: int | bytes) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _read_record(index: int, payload: bytes, rows: list[tuple[int, str, float]],
                 wall: list[float], meta: dict) -> int:
    """Add one record's rows (all or none: a damaged nested field raises ValueError before
    anything is added, so one bad field costs its record, never the run). Returns 0."""
    new_rows: list[tuple[int, str, float]] = []
    new_wall: list[float] = []
    for num, val in fields(payload):
        if num == 17 and isinstance(val, bytes):
            run = {n: _text(v) for n, v in fields(val) if n in (1, 3, 8)}
            meta.update({"run_id": run.get(1, ""), "project": run.get(3, ""),
                         "display_name": run.get(8, "")})
        if num != 2 or not isinstance(val, bytes):
            continue
        items: dict[str, float] = {}
        step_num: int | None = None
        for n, v in fields(val):
            if n == 2 and isinstance(v, bytes):
                step_num = next((int(s) for k, s in fields(v) if k == 1 and isinstance(s, int)),
                                None)
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
        step = int(step_v) if step_v is not None and math.isfinite(step_v) else \
            (step_num if step_num is not None else index)
        ts = items.get("_timestamp", math.nan)
        for key, value in items.items():
            if key not in _INTERNAL:
                new_rows.append((step, key, value))
                new_wall.append(ts)
    rows += new_rows
    wall += new_wall
    return 0


def read_file(file: Path) -> RawRun:
    data = file.read_bytes()
    if not data.startswith(MAGIC):
        raise SourceError(file, "a W&B .wandb file (starting with ':W&B')", "another header")
    payloads, stopped = records(data)
    rows: list[tuple[int, str, float]] = []
    wall: list[float] = []
    meta: dict = {}
    bad = 0
    for index, payload in enumerate(payloads):
        try:
            bad += _read_record(index, payload, rows, wall, meta)
        except ValueError:  # a damaged record (or nested field) costs that record only
            bad += 1
    warnings = []
    if stopped:
        last = rows[-1][0] if rows else None
        warnings.append(f"{file}: history truncated ({stopped}); kept {len(payloads)} records "
                        f"up to step {last}")
    if bad:
        warnings.append(f"{file}: {bad} undecodable records dropped")
    name = meta.get("display_name") or meta.get("run_id") or file.stem.removeprefix("run-")
    return from_rows(name, str(file), FORMAT, rows, wall=wall, warnings=warnings, meta=meta)


def read(path: Path) -> list[RawRun]:
    if path.is_dir() and not any(path.glob("*.wandb")):
        files = sorted(path.glob("*run-*/*.wandb"))
        return [read_file(f) for f in files]
    return [read_file(_find_file(path))]
