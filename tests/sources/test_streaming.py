"""Readers stream their files (issue 13 R1): peak memory follows the values kept, not the file.

Each file here is mostly bytes a reader does not keep (a text column, envelope columns, a long
string field), so a reader that went back to holding the whole file (or every row as Python
objects) peaks above half the file size and fails; streaming stays far below. Over-long lines
(a sparse file, one line of megabytes) are refused at once with one line naming the file.
"""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
from sources_util import peak_memory

from stabdiag import sources
from stabdiag.errors import SourceError
from stabdiag.sources import cache, raw, wandb_csv, wandb_offline
from stabdiag.sources import csv as csv_reader
from stabdiag.sources import jsonl as jsonl_reader

NOTE = "x" * 180  # a text cell per row: read, never kept
ROWS = 12_000  # ~2.3 MB files: big enough to tell streaming from whole-file reads, fast


def _csv(tmp_path, rows: int = ROWS):
    p = tmp_path / "big.csv"
    p.write_text(
        "step,loss,note\n" + "".join(f"{i},{1.0 + i % 7 / 10},{NOTE}\n" for i in range(rows)),
        encoding="utf-8",
    )
    return p


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(csv_reader, "CHUNK_BYTES", 64 << 10)


@pytest.mark.parametrize("fast", [True, False])
def test_csv_memory_follows_the_kept_values(tmp_path, small_blocks, fast):
    p = _csv(tmp_path)
    size = p.stat().st_size
    [run], peak = peak_memory(lambda: csv_reader.read(p, fast=fast))
    assert len(run) == ROWS and run.names == ("loss",)
    assert any("non-numeric column(s) ignored: note" in w for w in run.warnings)
    assert peak < size / 2, f"peak {peak} for a {size}-byte file: the file is read whole"


def test_jsonl_memory_follows_the_kept_values(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_text(
        "".join(json.dumps({"step": i, "loss": 1.5, "note": NOTE}) + "\n" for i in range(ROWS)),
        encoding="utf-8",
    )
    size = p.stat().st_size
    [run], peak = peak_memory(lambda: jsonl_reader.read(p))
    assert len(run) == ROWS and run.names == ("loss",)
    assert peak < size / 2, f"peak {peak} for a {size}-byte file: the file is read whole"


def test_wandb_csv_memory_follows_the_kept_values(tmp_path):
    cols = ['"Step"'] + [f'"run-a - m{j}__{x}"' for j in range(8) for x in ("MIN", "MAX")]
    p = tmp_path / "export.csv"
    p.write_text(
        ",".join([*cols, '"run-a - loss"'])
        + "\n"
        + "".join(f"{i}," + "1.2345678,2.3456789," * 8 + "0.5\n" for i in range(ROWS)),
        encoding="utf-8",
    )
    size = p.stat().st_size
    [run], peak = peak_memory(lambda: wandb_csv.read(p))
    assert len(run) == ROWS and run.meta["envelope_columns_ignored"] == 16
    assert peak < size / 2, f"peak {peak} for a {size}-byte file: the file is read whole"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _ld(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _wandb(records: list[bytes]) -> bytes:
    out = bytearray(b":W&B" + struct.pack("<HB", 0xBEE1, 0))
    for rec in records:
        left = 32768 - len(out) % 32768
        if left < 7 + len(rec):  # never split here: pad to the next block
            out += b"\0" * left
        out += struct.pack("<IHB", zlib.crc32(b"\x01" + rec) & 0xFFFFFFFF, len(rec), 1) + rec
    return bytes(out)


def _history(step: int) -> bytes:
    items = [
        (b"_step", str(step).encode()),
        (b"loss", b"0.25"),
        (b"note", json.dumps(NOTE).encode()),
    ]
    return _ld(2, b"".join(_ld(1, _ld(1, k) + _ld(16, v)) for k, v in items))


def test_wandb_offline_memory_follows_the_kept_values(tmp_path):
    p = tmp_path / "run-x.wandb"
    p.write_bytes(_wandb([_history(i) for i in range(ROWS)]))
    size = p.stat().st_size
    run, peak = peak_memory(lambda: wandb_offline.read_file(p))
    assert len(run) == ROWS and run.names == ("loss",) and run.warnings == ()
    assert peak < size / 2, f"peak {peak} for a {size}-byte file: the file is read whole"


def test_wandb_offline_oversized_record_is_dropped_and_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(wandb_offline, "MAX_RECORD", 40_000)
    big = _ld(2, _ld(1, _ld(1, b"pad") + _ld(16, json.dumps("p" * 80_000).encode())))
    recs = [_history(0), big, _history(1)]
    out = bytearray(b":W&B" + struct.pack("<HB", 0xBEE1, 0))
    for rec in recs:  # the big record as FIRST/MIDDLE/LAST fragments across blocks
        pos = 0
        while pos < len(rec):
            left = 32768 - len(out) % 32768
            if left < 7:
                out += b"\0" * left
                left = 32768
            piece = rec[pos : pos + left - 7]
            last = pos + len(piece) == len(rec)
            kind = 1 if pos == 0 and last else 2 if pos == 0 else 4 if last else 3
            out += (
                struct.pack(
                    "<IHB", zlib.crc32(bytes([kind]) + piece) & 0xFFFFFFFF, len(piece), kind
                )
                + piece
            )
            pos += len(piece)
    p = tmp_path / "run-y.wandb"
    p.write_bytes(bytes(out))
    run = wandb_offline.read_file(p)
    assert run.steps.tolist() == [0, 1]
    assert any("1 undecodable records dropped (1 over" in w for w in run.warnings)


def test_fast_path_in_many_blocks_matches_row_by_row(tmp_path, monkeypatch):
    """Codes, run names, line numbers and the warnings carried from block to block."""
    monkeypatch.setattr(csv_reader, "CHUNK_BYTES", 2048)
    rng = np.random.default_rng(1)
    lines = ["run,step,rank,loss,lr,note"]
    for i in range(3000):
        loss = rng.choice(["1.5", "nan", "", "bad", "inf", repr(float(rng.standard_normal()))])
        lr = "" if i < 1500 else "1e-3"  # a column that starts empty, numbers later
        step = "x" if i % 997 == 5 else str(i // 2)
        lines.append(f"r{i % 3 if i > 10 else 'z'},{step},{i % 2},{loss},{lr},t{i}")
    p = tmp_path / "many.csv"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    fast = csv_reader._read_fast(p, csv_reader.FORMAT, None)
    slow = csv_reader.read(p, fast=False)
    assert fast is not None and len(fast) == len(slow) == 4
    for a, b in zip(fast, slow, strict=True):
        assert (a.name, a.names, a.warnings) == (b.name, b.names, b.warnings)
        for f in ("codes", "steps", "values", "wall_time", "rank"):
            u, v = getattr(a, f), getattr(b, f)
            assert (u is None) == (v is None)
            if u is not None:
                assert u.dtype == v.dtype
                np.testing.assert_array_equal(
                    u.view(np.int64) if u.dtype == np.float64 else u,
                    v.view(np.int64) if v.dtype == np.float64 else v,
                )
    long = tmp_path / "long.csv"
    long.write_text(
        "step,metric,value\n"
        + "".join(f"{i},m{i % 5},{i / 3}\n" for i in range(4000))
        + "4000,,1\n",
        encoding="utf-8",
    )
    fast = csv_reader._read_fast(long, csv_reader.FORMAT, None)
    slow = csv_reader.read(long, fast=False)
    assert fast is not None and fast[0].names == slow[0].names == tuple(f"m{k}" for k in range(5))
    assert fast[0].warnings == slow[0].warnings and "line 4002" in fast[0].warnings[0]
    np.testing.assert_array_equal(fast[0].codes, slow[0].codes)


def test_a_late_malformed_block_sends_the_file_row_by_row(tmp_path, small_blocks):
    p = _csv(tmp_path, rows=4000)
    with open(p, "a", encoding="utf-8") as fh:
        fh.write('4000,"2.5",quoted\n')  # a quote in the last block: not for the fast path
    assert csv_reader._read_fast(p, csv_reader.FORMAT, None) is None
    [run] = csv_reader.read(p)
    assert len(run) == 4001 and run.values[-1] == 2.5


@pytest.mark.parametrize("name", ["sparse.csv", "sparse.jsonl", "export.csv"])
def test_a_line_without_end_is_refused_at_once(tmp_path, monkeypatch, name):
    """A sparse file (zero bytes, no line end anywhere) is refused after MAX_LINE characters
    with one line naming the file, not read whole first."""
    monkeypatch.setattr(raw, "MAX_LINE", 1 << 20)
    p = tmp_path / name
    if name == "export.csv":  # a W&B export header, then megabytes without a line end
        p.write_bytes(b'"Step","r - loss"\n0,1\n' + b"7" * (3 << 20))
        read = wandb_csv.read
    else:
        with open(p, "wb") as fh:
            fh.truncate(64 << 20)
        read = csv_reader.read if name.endswith(".csv") else jsonl_reader.read
    with pytest.raises(SourceError) as err:
        _, peak = peak_memory(lambda: read(p))
    msg = str(err.value)
    assert msg.startswith(str(p)) and "is over 1 MB long" in msg and "\n" not in msg


def test_sparse_file_in_a_tree_is_one_error_line_and_the_rest_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(raw, "MAX_LINE", 1 << 20)
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "metrics.csv").write_text("step,loss\n0,1.0\n1,0.9\n", encoding="utf-8")
    (tmp_path / "bad").mkdir()
    with open(tmp_path / "bad" / "log.jsonl", "wb") as fh:
        fh.write(b'{"step": 0, "loss": 1.0}\n')
        fh.truncate(32 << 20)
    got = sources.load([tmp_path])
    assert len(got.table) == 2
    [err] = got.errors
    assert "log.jsonl" in err and "is over 1 MB long" in err


def test_line_cap_keeps_long_but_sane_lines(tmp_path):
    """A line under the cap (a wide row) is read as before: the cap refuses only absurd lines."""
    cols = [f"m{j}" for j in range(3000)]
    p = tmp_path / "wide.csv"
    p.write_text(
        "step," + ",".join(cols) + "\n0," + ",".join("1.5" for _ in cols) + "\n", encoding="utf-8"
    )
    [run] = csv_reader.read(p)
    assert len(run) == 3000


@pytest.mark.parametrize(
    "values",
    [
        np.array([1.5, np.float32(0.1), np.inf, -0.0, np.nan], np.float64),  # float32-exact
        np.array([0.1, 1e300, 5e-324, np.nan], np.float64),  # not: stored as float64
        np.frombuffer(
            np.array([0x7FF0000000000001, 0x7FF8000000000000], np.int64).tobytes(), np.float64
        ),  # NaN payloads kept bit for bit
    ],
)
def test_cache_entry_narrowing_is_exact(values):
    for key, a in (
        ("values", values),
        ("steps", np.array([0, 2**40, -3], np.int64)),
        ("steps", np.array([0, 5], np.int64)),
        ("codes", np.array([0, 300], np.int32)),
    ):
        stored = cache._narrow(key, a)
        back = cache._widen(key, stored)
        assert back.dtype == a.dtype
        np.testing.assert_array_equal(
            back.view(np.int64) if a.dtype == np.float64 else back,
            a.view(np.int64) if a.dtype == np.float64 else a,
        )
    assert cache._narrow("values", np.array([1.5, 2.0])).dtype == np.float32
    assert cache._narrow("values", np.array([0.1])).dtype == np.float64
    assert cache._narrow("steps", np.array([0, 5])).dtype == np.int32
    assert cache._narrow("codes", np.array([0, 5], np.int32)).dtype == np.int8
