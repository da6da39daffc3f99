"""Helpers for tests/sources: write event files with real writers (torch, tensorboard)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_torch(
    logdir: Path,
    series: dict[str, list[tuple[int, float]]],
    *,
    new_style: bool = False,
    suffix: str = "",
) -> Path:
    """torch SummaryWriter.add_scalar: simple_value, or tensor + 'scalars' plugin (new_style)."""
    from torch.utils.tensorboard import SummaryWriter

    before = set(logdir.glob("events.out.tfevents*")) if logdir.exists() else set()
    w = SummaryWriter(log_dir=str(logdir), filename_suffix=suffix)
    rows = [(s, i, tag, v) for i, (tag, pts) in enumerate(series.items()) for s, v in pts]
    for step, _, tag, value in sorted(rows, key=lambda r: (r[0], r[1])):
        w.add_scalar(tag, value, step, walltime=1000.0 + step, new_style=new_style)
    w.close()
    (new,) = set(logdir.glob("events.out.tfevents*")) - before
    return new


def tensor_event(
    step: int,
    tag: str,
    value: float,
    *,
    dtype: str = "float",
    metadata: bool = True,
    plugin: str = "scalars",
):
    """An Event with a TF2-style tensor scalar, built from tensorboard's own protos."""
    from tensorboard.compat.proto import (
        event_pb2,
        summary_pb2,
        tensor_pb2,
        tensor_shape_pb2,
        types_pb2,
    )

    t = tensor_pb2.TensorProto(tensor_shape=tensor_shape_pb2.TensorShapeProto())
    if dtype == "float":  # tensor_content, like TF's C++ writer
        t.dtype = types_pb2.DT_FLOAT
        t.tensor_content = np.float32(value).tobytes()
    elif dtype == "float_val":
        t.dtype = types_pb2.DT_FLOAT
        t.float_val.append(value)
    elif dtype == "double":
        t.dtype = types_pb2.DT_DOUBLE
        t.double_val.append(value)
    elif dtype == "half":
        t.dtype = types_pb2.DT_HALF
        t.half_val.append(int(np.float16(value).view(np.uint16)))
    elif dtype == "int64":
        t.dtype = types_pb2.DT_INT64
        t.int64_val.append(int(value))
    elif dtype == "vector1":  # rank 1, one element
        t.dtype = types_pb2.DT_FLOAT
        t.tensor_shape.dim.add(size=1)
        t.float_val.append(value)
    elif dtype == "string":
        t.dtype = types_pb2.DT_STRING
        t.string_val.append(b"hello")
    v = summary_pb2.Summary.Value(tag=tag, tensor=t)
    if metadata:
        v.metadata.plugin_data.plugin_name = plugin
    return event_pb2.Event(
        wall_time=2000.0 + step, step=step, summary=summary_pb2.Summary(value=[v])
    )


def write_events(logdir: Path, events, suffix: str = "") -> Path:
    """Write Event protos with tensorboard's EventFileWriter (TFRecord framing + CRCs)."""
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    logdir.mkdir(parents=True, exist_ok=True)
    before = set(logdir.glob("events.out.tfevents*"))
    w = EventFileWriter(str(logdir), filename_suffix=suffix)
    for e in events:
        w.add_event(e)
    w.close()
    (new,) = set(logdir.glob("events.out.tfevents*")) - before
    return new


def series_of(result, run: str, metric: str) -> tuple[list[int], list[float]]:
    s = result.table.series(run, metric)
    return s.steps.tolist(), s.values.tolist()


def assert_same_raw_runs(a, b) -> None:  # noqa: ANN001 - lists of RawRun
    """Two readings of a file give the same runs: every field, arrays in the same dtypes, floats
    bit for bit (NaN where NaN, -0.0 where -0.0)."""
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert (x.name, x.path, x.format, x.names, x.warnings, dict(x.meta), x.context) == (
            y.name,
            y.path,
            y.format,
            y.names,
            y.warnings,
            dict(y.meta),
            y.context,
        )
        for f in ("codes", "steps", "values", "wall_time", "rank"):
            u, v = getattr(x, f), getattr(y, f)
            assert (u is None) == (v is None), f
            if u is not None:
                assert u.dtype == v.dtype, f
                np.testing.assert_array_equal(u, v, err_msg=f)
                if u.dtype.kind == "f":
                    np.testing.assert_array_equal(u.view(np.int64), v.view(np.int64), err_msg=f)


def peak_memory(fn):  # noqa: ANN001, ANN201
    """(what ``fn()`` returned, peak bytes Python and numpy allocated while it ran)."""
    import tracemalloc

    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
