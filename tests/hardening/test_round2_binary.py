"""Issue 13: TensorBoard, W&B and cache defects (C1-C5, C10, D1-D3, L2, R2), inputs built here."""

from __future__ import annotations

import json
import math
import os
import struct
import time

import numpy as np
import pytest
from adversarial_util import (
    mlflow_bad_steps,
    scalar_event,
    tb_double_new_style,
    tb_ff_record,
    tb_file,
    tb_half_odd_lengths,
    tb_huge_length,
    tb_long_tag,
    tb_non_utf8_tags,
    wandb_damaged_field,
    wandb_ff_record,
    wandb_split_record,
)

from stabdiag.sources import cache, load
from stabdiag.sources import tensorboard as tb

FAST = 5.0  # seconds: the fixed readers take well under one; the defects took minutes


def _timed_load(path):
    t0 = time.perf_counter()
    r = load([path])
    took = time.perf_counter() - t0
    assert took < FAST, f"{path} took {took:.1f}s"
    return r


def _series(r, metric):
    df = r.table.df if hasattr(r.table, "df") else r.table.frame
    return df[df.metric == metric]


@pytest.fixture(autouse=True)
def _no_cache(monkeypatch):
    monkeypatch.setenv("STABDIAG_NO_CACHE", "1")


# --------------------------------------------------------------------------- TensorBoard


def test_c1_double_precision_new_style_scalars_are_read(tmp_path):
    s = tb.read_file(tb_double_new_style(tmp_path))
    assert set(s.tags) == {"train/loss", "train/lr", "train/grad_norm"}
    loss = s.values[np.array(s.tags)[s.codes] == "train/loss"]
    assert len(loss) == 50 and loss[0] == 2.0 and math.isclose(loss[-1], 2.0 - 49 / 50)
    assert not s.warnings


@pytest.mark.skipif(os.environ.get("STABDIAG_SKIP_TORCH_TB") == "1", reason="opt-out")
def test_c1_real_summary_writer_double_precision(tmp_path):
    torch_tb = pytest.importorskip("torch.utils.tensorboard")
    w = torch_tb.SummaryWriter(str(tmp_path / "run"))
    for i in range(20):
        w.add_scalar("train/loss", 2.0 - i / 20, i, new_style=True, double_precision=True)
        w.add_scalar("train/lr", 1e-3, i)
        w.add_scalar("train/grad_norm", 1.0, i)
    w.close()
    r = load([tmp_path / "run"])
    assert len(r.runs) == 1 and not r.errors
    assert {"train/loss", "train/lr", "train/grad_norm"} <= set(r.table.metrics())


def test_c2_tags_that_decode_alike_stay_apart(tmp_path):
    s = tb.read_file(tb_non_utf8_tags(tmp_path))
    assert len(s.tags) == len(set(s.tags)) == 3
    r = load([tmp_path / "run"])
    names = {raw for raw, _, _ in r.runs[0].mapping}
    assert {"loss\\xff", "loss\\xfe"} <= names  # one escaped spelling, never U+FFFD twice


def test_c3_half_and_bfloat16_with_odd_content_are_skipped(tmp_path):
    s = tb.read_file(tb_half_odd_lengths(tmp_path))
    assert s.tags == ("train/loss",) and len(s.values) == 1


def test_d1_record_of_ff_bytes_is_fast(tmp_path):
    r = _timed_load(tb_ff_record(tmp_path))
    assert len(r.table) == 1
    assert "could not be decoded" in " ".join(r.runs[0].warnings)


def test_d2_one_enormous_tag_is_linear(tmp_path):
    s = tb.read_file(tb_long_tag(tmp_path, n=40_000, tag_len=400_000))
    t0 = time.perf_counter()
    s = tb.read_file(tb_long_tag(tmp_path / "b", n=40_000, tag_len=400_000))
    assert time.perf_counter() - t0 < FAST
    assert s.tags == ("train/loss", "x" * 400_000) and len(s.values) == 40_001


def test_d2_long_and_short_tags_keep_first_seen_order(tmp_path):
    long_a, long_b = "a" * 300, "b" * 300
    pay = [
        scalar_event(0, long_b, 1.0),
        scalar_event(0, "s", 2.0),
        scalar_event(1, long_a, 3.0),
        scalar_event(1, long_b, 4.0),
        scalar_event(2, "t", 5.0),
    ]
    s = tb.read_file(tb_file(tmp_path, pay))
    assert s.tags == (long_b, "s", long_a, "t")
    assert s.codes.tolist() == [0, 1, 2, 0, 3] and s.values.tolist() == [1, 2, 3, 4, 5]


def test_r2_impossible_length_resynchronises(tmp_path):
    f = tb_huge_length(tmp_path, n_after=2000)
    s = tb.read_file(f)
    assert len(s.values) == 2010  # the records after the bad header are kept
    assert any("impossible record length" in w for w in s.warnings)


def test_r2_impossible_length_across_chunks(tmp_path, monkeypatch):
    f = tb_huge_length(tmp_path, n_after=3000)
    whole = tb.read_file(f)
    state = tb._Stream(str(f), {})
    with open(f, "rb") as fh:
        tb._read_stream(fh, state, os.path.getsize(f), chunk=4096)  # the skip spans chunks
    part = state.result()
    assert len(part.values) == len(whole.values) == 3010
    assert part.warnings == whole.warnings


def test_truncated_last_record_is_still_truncation(tmp_path):
    f = tb_file(tmp_path, [scalar_event(i, "train/loss", 1.0) for i in range(10)])
    f.write_bytes(f.read_bytes()[:-7])
    s = tb.read_file(f)
    assert len(s.values) == 9 and "truncated record" in s.warnings[0]


# --------------------------------------------------------------------------- W&B


def test_d3_wandb_ff_record_and_split_record_are_fast(tmp_path):
    r = _timed_load(wandb_ff_record(tmp_path / "a"))
    assert len(r.table) == 1
    r = _timed_load(wandb_split_record(tmp_path / "b", n=24 << 20))
    assert len(r.table) == 2  # the rows before and after the 24 MB record


def test_c4_one_damaged_nested_field_costs_one_record(tmp_path):
    r = load([wandb_damaged_field(tmp_path)])
    assert len(r.table) == 48  # 50 history records, one damaged, one replaced by a bad run record
    assert "2 undecodable records dropped" in " ".join(r.runs[0].warnings)


# --------------------------------------------------------------------------- MLflow


def test_c5_bad_steps_are_bad_lines_not_a_lost_run(tmp_path):
    r = load([mlflow_bad_steps(tmp_path)])
    assert len(r.table) == 30
    assert "3 malformed metric lines" in " ".join(r.runs[0].warnings)


# --------------------------------------------------------------------------- cache


@pytest.fixture
def cdir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("STABDIAG_CACHE_DIR", str(d))
    monkeypatch.delenv("STABDIAG_NO_CACHE", raising=False)
    monkeypatch.setattr(cache, "MIN_BYTES", 0)
    return d


def _entry(path):
    with np.load(cache.entry_path(path), allow_pickle=False) as z:
        meta = json.loads(bytes(z["meta"]).decode())
        return meta, {k: z[k] for k in cache._ARRAYS}


def _put(path, meta, arrays):
    with open(cache.entry_path(path), "wb") as fh:
        np.savez(fh, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)


def _events(tmp_path, n=200):
    return tb_file(tmp_path, [scalar_event(i, "train/loss", 2.0 - i / n) for i in range(n)])


@pytest.mark.parametrize(
    "damage",
    [
        lambda m, a: m.update(fast_tags=[]),  # codes point past the tag table
        lambda m, a: m.update(consumed="x"),
        lambda m, a: m.update(skipped=[[1, 2]]),
        lambda m, a: m.update(plugins_out={"t": 3}),
        lambda m, a: a.update(values=a["values"][:-1]),  # lengths disagree
        lambda m, a: a.update(codes=a["codes"].astype(np.float64)),
        lambda m, a: m.pop("stop"),
    ],
)
def test_c10_malformed_entries_are_misses(tmp_path, cdir, damage):
    f = _events(tmp_path)
    good = cache.read_event_file(f)
    meta, arrays = _entry(f)
    damage(meta, arrays)
    _put(f, meta, arrays)
    again = cache.read_event_file(f)
    assert again.tags == good.tags and again.values.tolist() == good.values.tolist()


def test_c10_l2_forged_or_stale_entry_with_the_same_stat_key_is_not_trusted(tmp_path, cdir):
    f = _events(tmp_path)
    cache.read_event_file(f)
    meta, arrays = _entry(f)
    arrays["values"] = arrays["values"].copy()
    arrays["values"][100] = 1e6  # a spike that is not in the file
    st = os.stat(f)
    # Same size, same mtime (1-second filesystems), new content: rewrite one value in place.
    data = bytearray(f.read_bytes())
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    meta["key"]["ctime_ns"] = os.stat(f).st_ctime_ns  # a forger also matches the ctime
    meta["key"]["sample"] ^= 1  # ...but not the content sample
    _put(f, meta, arrays)
    got = cache.read_event_file(f)
    assert got.values.max() < 3


def test_l2_same_size_rewrite_within_one_timestamp_tick_is_a_miss(tmp_path, cdir):
    f = _events(tmp_path)
    first = cache.read_event_file(f)
    st = os.stat(f)
    changed = tb_file(tmp_path / "b", [scalar_event(i, "train/loss", 9.0) for i in range(200)])
    f.write_bytes(changed.read_bytes())  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))

    real_stat_key = cache._stat_key
    # Simulate a filesystem whose ctime did not tick either (coarse timestamps).
    cache._stat_key = lambda s: {**real_stat_key(s), "ctime_ns": st.st_ctime_ns}
    try:
        got = cache.read_event_file(f)
    finally:
        cache._stat_key = real_stat_key
    assert first.values[0] != 9.0 and set(got.values.tolist()) == {9.0}


def test_cache_roundtrip_keeps_resync_warnings(tmp_path, cdir):
    f = tb_huge_length(tmp_path, n_after=500)
    a = cache.read_event_file(f)
    b = cache.read_event_file(f)  # a hit
    assert a.warnings == b.warnings and len(b.values) == 510
    assert struct.calcsize("<Q") == 8


def test_r3_cache_is_capped_least_recently_used_first(tmp_path, cdir, monkeypatch):
    files = [_events(tmp_path / f"r{i}", n=2000) for i in range(4)]
    for f in files:
        cache.read_event_file(f)
    sizes = [cache.entry_path(f).stat().st_size for f in files]
    assert len(cache.entries()) == 4
    past = time.time() - 100
    for i, f in enumerate(files):  # r0 oldest ... r3 newest
        os.utime(cache.entry_path(f), (past + i, past + i))
    cache.read_event_file(files[0])  # a hit: r0 becomes the most recently used
    monkeypatch.setenv("STABDIAG_CACHE_MAX_MB", "0")
    assert cache.max_bytes() == 0
    assert cache.prune(sum(sizes) - sizes[1] // 2) == 1  # one entry must go: the LRU one, r1
    assert not cache.entry_path(files[1]).exists() and cache.entry_path(files[0]).exists()
    assert cache.prune(0) == 3 and cache.entries() == []


def test_r3_cache_cli_info_and_clear(tmp_path, cdir):
    import subprocess
    import sys

    cache.read_event_file(_events(tmp_path, n=2000))
    env = {**os.environ, "STABDIAG_CACHE_DIR": str(cdir)}
    run = [sys.executable, "-m", "stabdiag", "cache"]
    info = subprocess.run([*run, "info"], capture_output=True, text=True, env=env, timeout=120)
    assert info.returncode == 0 and "1 entry," in info.stdout
    clear = subprocess.run([*run, "clear"], capture_output=True, text=True, env=env, timeout=120)
    assert clear.returncode == 0 and "removed 1 of 1" in clear.stdout
    assert cache.entries() == []
