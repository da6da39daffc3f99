"""stabdiag.sources.cache: behaviour only (hits, misses, incremental appends, switches, damage)."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from stabdiag.sources import cache
from stabdiag.sources import tensorboard as tb


def _record(payload: bytes) -> bytes:
    head = struct.pack("<Q", len(payload))
    return (
        head
        + struct.pack("<I", tb.masked_crc(head))
        + payload
        + struct.pack("<I", tb.masked_crc(payload))
    )


def _scalar(tag: str, step: int, value: float, wall: float = 1.0) -> bytes:
    t = tag.encode()
    val = b"\x0a" + bytes([len(t)]) + t + b"\x15" + struct.pack("<f", value)
    summ = b"\x0a" + bytes([len(val)]) + val
    step_varint = bytearray()
    s = step
    while True:
        b, s = s & 0x7F, s >> 7
        step_varint.append(b | (0x80 if s else 0))
        if not s:
            break
    return _record(
        b"\x09"
        + struct.pack("<d", wall)
        + b"\x10"
        + bytes(step_varint)
        + b"\x2a"
        + bytes([len(summ)])
        + summ
    )


def _events(steps: range, tags=("loss", "grad_norm"), shift: float = 0.0) -> bytes:
    return b"".join(
        _scalar(t, s, float(s) + j / 10 + shift) for s in steps for j, t in enumerate(tags)
    )


@pytest.fixture
def cdir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("STABDIAG_CACHE_DIR", str(d))
    monkeypatch.delenv("STABDIAG_NO_CACHE", raising=False)
    monkeypatch.setattr(cache, "MIN_BYTES", 0)
    return d


@pytest.fixture
def spy(monkeypatch):
    """Counts how many records the reader actually parsed (0 on a cache hit)."""
    parsed = []
    real = tb._Stream._decode

    def decode(self, buf, heads):
        parsed.append(len(heads))
        return real(self, buf, heads)

    monkeypatch.setattr(tb._Stream, "_decode", decode)
    return parsed


def _same(a: tb.Scalars, b: tb.Scalars) -> None:
    assert a.tags == b.tags and a.warnings == b.warnings and a.records == b.records
    for f in ("codes", "steps", "values", "wall_time"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))


def _write(path, data: bytes) -> None:
    path.write_bytes(data)


def test_hit_on_unchanged_file(tmp_path, cdir, spy):
    f = tmp_path / "events.out.tfevents.1"
    _write(f, _events(range(100)))
    first = cache.read_event_file(f)
    assert sum(spy) == 200 and list(cdir.glob("*.npz"))
    spy.clear()
    second = cache.read_event_file(f)
    assert sum(spy) == 0
    _same(first, second)
    _same(second, tb.read_file(f))


def test_miss_on_changed_content_same_size(tmp_path, cdir, spy):
    f = tmp_path / "events.out.tfevents.1"
    _write(f, _events(range(100)))
    cache.read_event_file(f)
    st = os.stat(f)
    _write(f, _events(range(100), shift=0.5))  # same layout and size, other numbers
    assert os.path.getsize(f) == st.st_size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with the old mtime restored
    spy.clear()
    got = cache.read_event_file(f)
    assert sum(spy) == 200
    _same(got, tb.read_file(f))
    assert got.values[0] == 0.5


def test_miss_on_changed_size_and_mtime(tmp_path, cdir, spy):
    f = tmp_path / "events.out.tfevents.1"
    _write(f, _events(range(100)))
    cache.read_event_file(f)
    _write(f, _events(range(50)))  # shorter
    spy.clear()
    got = cache.read_event_file(f)
    assert sum(spy) == 100
    _same(got, tb.read_file(f))
    st = os.stat(f)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # only mtime moves
    spy.clear()
    got = cache.read_event_file(f)
    assert sum(spy) == 100
    _same(got, tb.read_file(f))


def test_appended_file_is_read_incrementally(tmp_path, cdir, spy):
    f = tmp_path / "events.out.tfevents.1"
    _write(f, _events(range(100)))
    cache.read_event_file(f)
    with open(f, "ab") as fh:
        fh.write(_events(range(100, 130), tags=("loss", "grad_norm", "lr")))
    spy.clear()
    got = cache.read_event_file(f)
    assert sum(spy) == 90  # only the appended records were parsed
    _same(got, tb.read_file(f))
    assert got.tags == ("loss", "grad_norm", "lr")
    spy.clear()
    _same(cache.read_event_file(f), got)  # and the grown entry is a hit next time
    assert sum(spy) == 0


def test_append_after_prefix_rewrite_is_a_full_read(tmp_path, cdir, spy):
    f = tmp_path / "events.out.tfevents.1"
    _write(f, _events(range(100)))
    cache.read_event_file(f)
    data = bytearray(_events(range(100)))
    data[-6:-4] = b"\xff\xff"  # damage one old record (its data CRC no longer matches)
    with open(f, "r+b") as fh:
        fh.write(bytes(data))
    with open(f, "ab") as fh:
        fh.write(_events(range(100, 110)))
    spy.clear()
    got = cache.read_event_file(f)
    assert sum(spy) == 220
    _same(got, tb.read_file(f))
    assert any("CRC mismatch" in w for w in got.warnings)


def test_append_to_truncated_file_is_a_full_read(tmp_path, cdir, spy):
    f = tmp_path / "events.out.tfevents.1"
    whole = _events(range(100))
    _write(f, whole[:-7])  # a writer caught mid-record
    assert cache.read_event_file(f).warnings
    _write(f, whole + _events(range(100, 105)))
    got = cache.read_event_file(f)
    _same(got, tb.read_file(f))
    assert not got.warnings and len(got.steps) == 210


def test_disable_switch(tmp_path, cdir, spy, monkeypatch):
    monkeypatch.setenv("STABDIAG_NO_CACHE", "1")
    f = tmp_path / "events.out.tfevents.1"
    _write(f, _events(range(10)))
    assert not cache.enabled()
    cache.read_event_file(f)
    cache.read_event_file(f)
    assert sum(spy) == 40 and not cdir.exists()


def test_corrupt_cache_file_is_ignored(tmp_path, cdir, spy):
    f = tmp_path / "events.out.tfevents.1"
    _write(f, _events(range(20)))
    want = cache.read_event_file(f)
    (entry,) = cdir.glob("*.npz")
    for junk in (b"", b"not a zip", entry.read_bytes()[:100]):
        entry.write_bytes(junk)
        spy.clear()
        _same(cache.read_event_file(f), want)
        assert sum(spy) == 40
    spy.clear()
    cache.read_event_file(f)  # rewritten by the last read: a hit again
    assert sum(spy) == 0


def test_reader_version_bump_invalidates(tmp_path, cdir, spy, monkeypatch):
    f = tmp_path / "events.out.tfevents.1"
    _write(f, _events(range(20)))
    cache.read_event_file(f)
    monkeypatch.setattr(tb, "READER_VERSION", tb.READER_VERSION + 1)
    spy.clear()
    cache.read_event_file(f)
    assert sum(spy) == 40
    spy.clear()
    cache.read_event_file(f)
    assert sum(spy) == 0


def test_small_files_are_not_cached(tmp_path, cdir, monkeypatch):
    monkeypatch.setattr(cache, "MIN_BYTES", 1 << 20)
    f = tmp_path / "events.out.tfevents.1"
    _write(f, _events(range(20)))
    cache.read_event_file(f)
    assert not cdir.exists()


def test_location_env(tmp_path, monkeypatch):
    monkeypatch.delenv("STABDIAG_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "stabdiag"
    monkeypatch.setenv("STABDIAG_CACHE_DIR", str(tmp_path / "mine"))
    assert cache.cache_dir() == tmp_path / "mine"


def test_load_through_cache_matches_uncached(tmp_path, cdir, monkeypatch):
    from stabdiag import sources

    run = tmp_path / "run"
    run.mkdir()
    _write(
        run / "events.out.tfevents.1", _events(range(300), tags=("train/loss", "train/grad_norm"))
    )
    warm = [sources.load([run]).table.frame for _ in range(2)]
    monkeypatch.setenv("STABDIAG_NO_CACHE", "1")
    cold = sources.load([run]).table.frame
    for w in warm:
        assert w.equals(cold)


def test_many_runs_in_worker_processes_match_serial(tmp_path, cdir):
    """Reading and detecting in worker processes (many runs) gives the serial report."""
    from stabdiag import diagnose as dg

    rng = np.random.default_rng(0)
    for i in range(dg.PARALLEL_MIN_RUNS + 1):
        run = tmp_path / "runs" / f"r{i}"
        run.mkdir(parents=True)
        loss = 2 + rng.standard_normal(400) * 0.05
        loss[200 + i] = 30.0  # one spike per run, at a different step
        data = b"".join(
            _scalar("train/loss", s, float(v)) + _scalar("train/grad_norm", s, 1.0)
            for s, v in enumerate(loss)
        )
        _write(run / "events.out.tfevents.1", data)
    serial = dg.diagnose([tmp_path / "runs"], jobs=1)
    parallel = dg.diagnose([tmp_path / "runs"], jobs=2)
    assert serial.findings and serial.findings == parallel.findings
    assert serial.skipped == parallel.skipped and serial.runs == parallel.runs
    assert serial.remedies == parallel.remedies
    assert serial.table.frame.equals(parallel.table.frame)


def test_entry_stores_narrow_types_and_reads_back_exactly(tmp_path, cdir, spy):
    """float32 scalars, small steps and few tags: an entry costs about 17 bytes a value, not 29
    (issue 13 R3), and a hit gives the read's arrays back in the reader's own types."""
    f = tmp_path / "events.out.tfevents.1"
    _write(f, _events(range(20000)))
    want = cache.read_event_file(f)
    [(_, size, _)] = cache.entries()
    assert size < 18 * len(want.values) + 4096
    parsed = len(spy)
    got = cache.read_event_file(f)
    assert len(spy) == parsed  # the second read was a hit
    _same(got, want)
    assert (got.codes.dtype, got.steps.dtype, got.values.dtype) == (np.int32, np.int64, np.float64)
