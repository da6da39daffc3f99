"""Our event-file reader against files written by real writers, and against damaged files."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sources_util import series_of, tensor_event, write_events, write_torch

from stabdiag import sources
from stabdiag.errors import SourceError
from stabdiag.sources import tensorboard

LOSS = [(s, 1.0 / (s + 1)) for s in range(0, 50)] + [(50, float("nan")), (51, float("inf"))]


def test_torch_simple_value(tmp_path):
    write_torch(tmp_path / "run", {"train/loss": LOSS, "train/lr": [(s, 1e-3) for s in range(52)]})
    res = sources.load([tmp_path / "run"])
    assert res.errors == () and [r.name for r in res.runs] == ["run"]
    steps, vals = series_of(res, "run", "train/loss")
    assert steps == list(range(52))
    assert np.allclose(vals[:50], [np.float32(v) for _, v in LOSS[:50]])
    assert math.isnan(vals[50]) and vals[51] == math.inf
    assert series_of(res, "run", "train/lr")[1][0] == pytest.approx(1e-3)


def test_torch_new_style_tensor(tmp_path):
    write_torch(tmp_path / "run", {"loss": LOSS}, new_style=True)
    res = sources.load([tmp_path / "run"])
    steps, vals = series_of(res, "run", "train/loss")
    assert steps == list(range(52)) and math.isnan(vals[50])
    assert dict(m[:2] for m in res.runs[0].mapping)["loss"] == "train/loss"


@pytest.mark.parametrize("dtype", ["float", "float_val", "double", "half", "int64", "vector1"])
def test_tf2_tensor_encodings(tmp_path, dtype):
    # Metadata only on the first event of the tag: the plugin must be remembered.
    evs = [tensor_event(s, "epoch_loss", 2.0 + s, dtype=dtype, metadata=(s == 0)) for s in range(5)]
    evs.append(tensor_event(0, "text_summary", 0, dtype="string", plugin="text"))
    evs.append(tensor_event(1, "hist", 3.0, plugin="histograms"))
    write_events(tmp_path / "train", evs, suffix=".v2")
    s = tensorboard.read_files(list((tmp_path / "train").glob("events*")))
    assert s.tags == ("epoch_loss",)
    assert s.steps.tolist() == list(range(5))
    assert s.values.tolist() == [2.0, 3.0, 4.0, 5.0, 6.0]


def test_matches_tbparse(tmp_path):
    tbparse = pytest.importorskip("tbparse")
    write_torch(
        tmp_path / "a",
        {"x": [(s, s * 0.5) for s in range(30)], "y/z": [(s, -s) for s in range(0, 30, 3)]},
    )
    ref = tbparse.SummaryReader(str(tmp_path / "a")).scalars.sort_values(["tag", "step"])
    s = tensorboard.read_files(list((tmp_path / "a").glob("events*")))
    ours = sorted(
        zip([s.tags[c] for c in s.codes], s.steps.tolist(), s.values.tolist(), strict=True)
    )
    assert ours == sorted(zip(ref["tag"], ref["step"], ref["value"], strict=True))


def test_truncated_file_keeps_earlier_records(tmp_path):
    f = write_torch(tmp_path / "run", {"train/loss": LOSS})
    data = f.read_bytes()
    f.write_bytes(data[:-7])  # cut mid-record (the last one)
    res = sources.load([tmp_path / "run"])
    steps, _ = series_of(res, "run", "train/loss")
    assert steps == list(range(51))
    assert any("truncated record" in w and str(f) in w for w in res.runs[0].warnings)


def test_crc_corruption_is_reported_with_offset(tmp_path):
    f = write_torch(tmp_path / "run", {"train/loss": LOSS})
    data = bytearray(f.read_bytes())
    starts, lens, _ = tensorboard.frame(bytes(data), str(f))
    victim = int(starts[10])  # flip a byte inside record 10's payload: data CRC mismatch
    data[victim + 3] ^= 0xFF
    f.write_bytes(bytes(data))
    res = sources.load([tmp_path / "run"])
    steps, _ = series_of(res, "run", "train/loss")
    assert len(steps) == 51  # one record skipped, the rest kept
    (w,) = [w for w in res.runs[0].warnings if "CRC" in w]
    assert str(victim - 12) in w and "1 record" in w


def test_length_crc_corruption_stops_with_warning(tmp_path):
    f = write_torch(tmp_path / "run", {"train/loss": LOSS})
    data = bytearray(f.read_bytes())
    starts, _, _ = tensorboard.frame(bytes(data), str(f))
    data[int(starts[20]) - 12] ^= 0x01  # the length field of record 20
    f.write_bytes(bytes(data))
    res = sources.load([tmp_path / "run"])
    assert len(series_of(res, "run", "train/loss")[0]) == 19  # records 1..19 (0 = file_version)
    assert any("length CRC mismatch" in w for w in res.runs[0].warnings)


def test_resumed_run_two_files_is_one_run_with_restart(tmp_path):
    run = tmp_path / "resumed"
    write_torch(
        run,
        {
            "train/loss": [(s, 1.0) for s in range(0, 100)],
            "train/grad_norm": [(s, 0.5) for s in range(0, 100)],
        },
        suffix=".a",
    )
    write_torch(
        run,
        {
            "train/loss": [(s, 2.0) for s in range(90, 150)],
            "train/grad_norm": [(s, 0.7) for s in range(90, 150)],
        },
        suffix=".b",
    )
    res = sources.load([run])
    assert [r.name for r in res.runs] == ["resumed"]
    steps, vals = series_of(res, "resumed", "train/loss")
    assert steps == list(range(150))
    assert vals[89] == 1.0 and vals[90] == 2.0  # later-written values win
    assert series_of(res, "resumed", "meta/restart") == ([90], [99.0])
    assert sum("restart" in w for w in res.runs[0].warnings) == 1


def test_not_a_tfrecord_explicit_file_raises(tmp_path):
    f = tmp_path / "events.out.tfevents.123.host"
    f.write_bytes(b"this is not a tfrecord file at all" * 3)
    with pytest.raises(SourceError):
        sources.load([f])


@pytest.mark.parametrize("dtype", ["float", "float_val"])
def test_bare_tensors_of_a_non_scalar_plugin_are_skipped(tmp_path, dtype):
    # Metadata (another plugin) only on the first event; later float tensors carry none.
    evs = [
        tensor_event(s, "custom", 1.0, dtype=dtype, metadata=(s == 0), plugin="custom_plugin")
        for s in range(4)
    ]
    evs += [tensor_event(s, "loss", 2.0, dtype=dtype, metadata=(s == 0)) for s in range(4)]
    write_events(tmp_path / "r", evs)
    s = tensorboard.read_files(list((tmp_path / "r").glob("events*")))
    assert [s.tags[c] for c in s.codes] == ["loss"] * 4


def test_fast_and_slow_paths_agree(tmp_path):
    """The vectorised decoder and the pure-Python decoder give the same scalars."""
    f = write_torch(
        tmp_path / "a", {"x": LOSS, "y": [(s, -2.5 * s) for s in range(0, 60, 7)]}, new_style=True
    )
    write_torch(tmp_path / "a", {"z": LOSS}, suffix=".simple")
    for path in (tmp_path / "a").glob("events*"):
        buf = path.read_bytes()
        starts, lens, _ = tensorboard.frame(buf, str(path))
        ok = tensorboard._fast_scalars(buf, starts, lens)[0]
        assert ok.sum() == len(starts) - 1  # everything but the file_version record
        slow = [
            x
            for s, n in zip(starts.tolist(), lens.tolist(), strict=True)
            for x in tensorboard._decode_event(buf, s, s + n, {})
        ]
        fast = tensorboard.read_file(path)
        assert [(t, st) for t, st, _, _ in slow] == [
            (fast.tags[c], st) for c, st in zip(fast.codes, fast.steps.tolist(), strict=True)
        ]
        np.testing.assert_array_equal([v for _, _, v, _ in slow], fast.values)
    assert f.exists()
