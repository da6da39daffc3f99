"""Helpers for the hardening suite: seed files, a strict reader invariant, event-file writing."""

from __future__ import annotations

import os
import random
import struct
import time
from pathlib import Path

from stabdiag.errors import SourceError
from stabdiag.sources import LoadResult, load
from stabdiag.sources.tensorboard import masked_crc

REPO = Path(__file__).resolve().parents[2]
REAL_LOGS = (REPO / ".." / "shared" / "real_logs").resolve()
SAMPLE_RUNS = REPO / "sample_runs"
# Wall-clock bound per input: generous for 2 busy CI cores, tight enough to catch a hang.
MAX_SECONDS = 20.0
_NOT_LOGS = {".md", ".py", ".yaml", ".json5"}


def seed_files() -> list[Path]:
    """Every log file of our sample runs and (when present) the real logs, sorted."""
    roots = [SAMPLE_RUNS] + ([REAL_LOGS] if REAL_LOGS.is_dir() else [])
    out = []
    for root in roots:
        for p in sorted(root.rglob("*")):
            if (
                p.is_file()
                and p.suffix not in _NOT_LOGS
                and "params" not in p.parts
                and "tags" not in p.parts
            ):
                out.append(p)
    return out


def read_strict(path: Path, fmt: str | None = None) -> LoadResult | SourceError:
    """Load one file; the result must be a table or a SourceError from the reader itself (not
    load()'s safety net for reader bugs), within MAX_SECONDS."""
    t0 = time.perf_counter()
    try:
        result: LoadResult | SourceError = load([path], fmt=fmt)
    except SourceError as exc:
        assert "could not handle" not in str(exc), f"reader bug on {path} (fmt={fmt}): {exc}"
        result = exc
    took = time.perf_counter() - t0
    assert took < MAX_SECONDS, f"{path} (fmt={fmt}) took {took:.1f}s"
    return result


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One random damage: truncation, flipped bytes, deleted/duplicated line, junk tail, junk
    inserted."""
    kind = rng.randrange(6)
    if kind == 0:
        return "truncate", data[: rng.randrange(len(data) + 1)]
    if kind == 1:
        b = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            if b:
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return "flip", bytes(b)
    lines = data.split(b"\n")
    if kind == 2 and len(lines) > 1:
        del lines[rng.randrange(len(lines))]
        return "delete-line", b"\n".join(lines)
    if kind == 3 and len(lines) > 1:
        i = rng.randrange(len(lines))
        lines.insert(i, lines[i])
        return "dup-line", b"\n".join(lines)
    if kind == 4:
        head = data[: rng.randrange(min(len(data), 256) + 1)]
        return "junk-after-header", head + rng.randbytes(rng.randint(0, 2048))
    junk = rng.choice(JUNK)
    i = rng.randrange(len(data) + 1)
    return "insert-junk", data[:i] + junk + data[i:]


JUNK = [
    b"\x00" * 16,
    b"nan",
    b"-inf",
    b"1e999",
    b"9" * 30,
    b"9" * 5000,
    b"\xff\xfe",
    b"\r",
    b"\r\n",
    b'{"step": 1e30, "loss": 1}\n',
    b"[" * 3000,
    b"{" * 3000,
    b'"',
    b",,,,,\n",
    b"iteration 99999999999999999999/ 5 | consumed samples: 1 | number of skipped iterations:"
    b" 99999999999 | lm loss: 1 |\n",
    b"s:99999999999999999999999 trl:1\n",
    b"iter 18446744073709551616: loss 1.0, time 1ms\n",
    b"{'loss': 1e400, 'learning_rate': nan, 'epoch': 0.1}\n",
    b"[Rank 0] step=99999999999999999999, skipped=1\n",
    # issue 13: regex backtracking (D4), bad tokens (C6), control characters (S3), YAML aliases (S5)
    b"*** JOB 1 ON " * 2000,
    b"OVERFLOW!" * 2000,
    b" loss: 1.0 " + b"a" * 20000,
    b'{"num_updates": "nan", "loss": "1"}\n',
    b"\xff" * 4096,
    b"\x1b[2J\x1b]52;c;aGk=\x07",
    b"a: &a [x, x]\nb: &b [*a, *a]\nrun_name: *b\n",
    b'step,loss\n1,"a\nb"\n',
]


def place(tmp: Path, src: Path, data: bytes) -> Path:
    """Write ``data`` under the source's file name (sniffing is by name), keeping the few
    parent names a format depends on (version_N/, metrics/ of an MLflow run)."""
    d = tmp / src.parent.name
    d.mkdir(parents=True, exist_ok=True)
    f = d / src.name
    f.write_bytes(data)
    return f


# --------------------------------------------------------------------------- TensorBoard


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _ld(field: int, payload: bytes) -> bytes:
    return bytes([field << 3 | 2]) + _varint(len(payload)) + payload


def scalar_event(step: int, tag: str, value: float, wall: float = 1.7e9) -> bytes:
    val = _ld(1, tag.encode()) + b"\x15" + struct.pack("<f", value)
    return b"\x09" + struct.pack("<d", wall) + b"\x10" + _varint(step) + _ld(5, _ld(1, val))


def record(payload: bytes) -> bytes:
    header = struct.pack("<Q", len(payload))
    return (
        header
        + struct.pack("<I", masked_crc(header))
        + payload
        + struct.pack("<I", masked_crc(payload))
    )


def event_file(path: Path, n: int, tag: str = "train/loss") -> list[int]:
    """Write a file-version record and ``n`` scalar records; return each record's byte offset."""
    first = b"\x09" + struct.pack("<d", 1.7e9) + _ld(3, b"brain.Event:2")
    offsets, buf = [], bytearray(record(first))
    for i in range(n):
        offsets.append(len(buf))
        buf += record(scalar_event(i, tag, 2.0 - i / max(n, 1)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(buf))
    return offsets


def make_pickle_bomb(path: Path, marker: Path) -> None:
    """A pickle whose unpickling creates ``marker`` (os.system-free: open(..., 'w'))."""
    import pickle

    class Boom:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path.write_bytes(pickle.dumps(Boom()))
    assert os.path.getsize(path) > 0
