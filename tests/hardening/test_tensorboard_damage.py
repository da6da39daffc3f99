"""TensorBoard damage: truncated tail, CRC mismatch in the middle, empty and foreign files."""

from __future__ import annotations

import struct

from hardening_util import event_file

from stabdiag.sources import load

N = 40


def _loss_steps(result) -> list[int]:
    f = result.table.frame
    return sorted(f.loc[f.metric == "train/loss", "step"].tolist())


def test_truncated_last_record_keeps_everything_before_it(tmp_path):
    f = tmp_path / "run" / "events.out.tfevents.1.host"
    offsets = event_file(f, N)
    data = f.read_bytes()
    for cut in range(offsets[-1] + 1, len(data)):  # every offset inside the last record
        f.write_bytes(data[:cut])
        r = load([f.parent])
        assert _loss_steps(r) == list(range(N - 1))
        warns = " ".join(r.runs[0].warnings)
        assert "truncated record" in warns and f"byte {offsets[-1]}" in warns


def test_crc_mismatch_in_the_middle_is_skipped_and_named(tmp_path):
    f = tmp_path / "run" / "events.out.tfevents.1.host"
    offsets = event_file(f, N)
    data = bytearray(f.read_bytes())
    bad = offsets[N // 2]
    data[bad + 12 + 5] ^= 0xFF  # inside the payload: data CRC no longer matches
    f.write_bytes(bytes(data))
    r = load([f.parent])
    assert _loss_steps(r) == [s for s in range(N) if s != N // 2]
    warns = " ".join(r.runs[0].warnings)
    assert "CRC mismatch" in warns and f"byte {bad}" in warns


def test_length_crc_mismatch_stops_and_says_where(tmp_path):
    f = tmp_path / "run" / "events.out.tfevents.1.host"
    offsets = event_file(f, N)
    data = bytearray(f.read_bytes())
    bad = offsets[10]
    data[bad : bad + 8] = struct.pack("<Q", 10**12)  # a huge length whose CRC fails
    f.write_bytes(bytes(data))
    r = load([f.parent])
    assert _loss_steps(r) == list(range(10))
    warns = " ".join(r.runs[0].warnings)
    assert "length CRC mismatch" in warns and f"byte {bad}" in warns


def test_empty_and_foreign_files_in_run_dir_are_noted(tmp_path):
    d = tmp_path / "run"
    event_file(d / "events.out.tfevents.2.host", N)
    (d / "events.out.tfevents.1.empty").write_bytes(b"")
    (d / "events.out.tfevents.3.text").write_bytes(b"this is not an event file\n")
    (d / "notes.bin").write_bytes(b"\x00\x01\x02")
    r = load([d])
    assert len(r.runs) == 1 and not r.errors
    assert _loss_steps(r) == list(range(N))
    warns = " ".join(r.runs[0].warnings)
    assert "events.out.tfevents.1.empty: empty event file" in warns
    assert "events.out.tfevents.3.text" in warns


def test_huge_declared_length_is_bounded(tmp_path):
    """A header claiming 2**60 bytes (valid length CRC) must not allocate or hang."""
    from stabdiag.sources.tensorboard import masked_crc

    f = tmp_path / "run" / "events.out.tfevents.1.host"
    event_file(f, 5)
    header = struct.pack("<Q", 1 << 60)
    f.write_bytes(f.read_bytes() + header + struct.pack("<I", masked_crc(header)) + b"x" * 100)
    r = load([f.parent])
    assert _loss_steps(r) == list(range(5))
    assert "truncated record" in " ".join(r.runs[0].warnings)
