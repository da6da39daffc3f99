"""Benchmark: load all scalars of one TensorBoard run - stabdiag's reader vs tbparse vs EventAccumulator.

Usage:
    python benchmarks/bench_tb_load.py --steps 50000 --tags 20 [--dir DIR] [--repeats 3]
    python benchmarks/bench_tb_load.py --logdir EXISTING_TB_DIR

Generates DIR/tb/ with torch ``SummaryWriter.add_scalar`` (simple_value, like
research/perf/gen.py) unless it already holds that many scalars, then times each loader
in-process (after imports, median of --repeats) producing a (step, tag, value) table, and checks
that all loaders return the same number of rows and the same value sum.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def generate(out: Path, steps: int, tags: int) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    tb = out / "tb"
    marker = tb / f".generated_{steps}x{tags}"
    if marker.exists():
        return tb
    tb.mkdir(parents=True, exist_ok=True)
    for f in tb.glob("events.out.tfevents*"):
        f.unlink()
    names = ["train/loss", "train/grad_norm", "train/lr", "train/loss_scale"] + [
        f"layers.{i}.grad_norm" for i in range(tags - 4)
    ]
    rng = np.random.default_rng(0)
    vals = rng.lognormal(0.0, 0.3, size=(steps, tags)).astype(np.float32)
    w = SummaryWriter(log_dir=str(tb), max_queue=10000, flush_secs=600)
    t0 = time.perf_counter()
    for s in range(steps):
        row = vals[s].tolist()
        for j, name in enumerate(names):
            w.add_scalar(name, row[j], s)
    w.close()
    print(f"wrote {steps * tags:,} scalars in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    marker.touch()
    return tb


def load_stabdiag(logdir: Path):
    from stabdiag import sources

    t = sources.load([logdir]).table.frame
    return len(t), float(np.nansum(t["value"].to_numpy()))


def load_stabdiag_reader(logdir: Path):
    """The event-file reader alone (no alias mapping / DataFrame)."""
    from stabdiag.sources import tensorboard

    s = tensorboard.read_files(sorted(logdir.glob("events.out.tfevents*")))
    return len(s.values), float(np.nansum(s.values))


def load_pyproto(logdir: Path):
    """Alternative design: our framing + CRC, then tensorboard's upb ``Event.FromString`` per record."""
    from tensorboard.compat.proto import event_pb2

    from stabdiag.sources import tensorboard

    n, total = 0, 0.0
    parse = event_pb2.Event.FromString
    for f in sorted(logdir.glob("events.out.tfevents*")):
        buf = f.read_bytes()
        starts, lens, _ = tensorboard.frame(buf, str(f))
        vals = []
        for s, ln in zip(starts.tolist(), lens.tolist(), strict=True):
            ev = parse(buf[s : s + ln])
            for v in ev.summary.value:
                if v.HasField("simple_value"):
                    vals.append(v.simple_value)
        n += len(vals)
        total += float(np.nansum(np.array(vals, dtype=np.float64)))
    return n, total


def load_tbparse(logdir: Path):
    from tbparse import SummaryReader

    df = SummaryReader(str(logdir)).scalars
    return len(df), float(np.nansum(df["value"].to_numpy(dtype=np.float64)))


def load_event_accumulator(logdir: Path):
    from tensorboard.backend.event_processing.event_accumulator import (
        SCALARS,
        EventAccumulator,
    )

    ea = EventAccumulator(str(logdir), size_guidance={SCALARS: 0})
    ea.Reload()
    n, total = 0, 0.0
    for tag in ea.Tags()["scalars"]:
        v = np.array([e.value for e in ea.Scalars(tag)], dtype=np.float64)
        n += len(v)
        total += float(np.nansum(v))
    return n, total


METHODS = {
    "stabdiag.sources.load": load_stabdiag,
    "stabdiag tensorboard.read_files": load_stabdiag_reader,
    "framing + event_pb2 (alternative)": load_pyproto,
    "tbparse": load_tbparse,
    "EventAccumulator": load_event_accumulator,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50_000)
    ap.add_argument("--tags", type=int, default=20)
    ap.add_argument("--dir", type=Path, default=None, help="scratch dir (kept for re-runs)")
    ap.add_argument("--logdir", type=Path, default=None, help="an existing TB run dir")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--methods", nargs="*", default=list(METHODS))
    args = ap.parse_args()
    if args.logdir is not None:
        logdir = args.logdir
    else:
        base = args.dir or Path(tempfile.gettempdir()) / "stabdiag_bench_tb"
        logdir = generate(base, args.steps, args.tags)
    size = sum(f.stat().st_size for f in logdir.glob("events.out.tfevents*"))
    print(f"logdir {logdir}  ({size / 1e6:.1f} MB)")
    results = {}
    for name in args.methods:
        times, out = [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = METHODS[name](logdir)
            times.append(time.perf_counter() - t0)
        results[name] = (statistics.median(times), out)
    ref = results["tbparse"][0] if "tbparse" in results else None
    print(
        f"{'method':34} {'rows':>10} {'value sum':>16} {'median s':>9} {'scalars/s':>11} "
        f"{'vs tbparse':>10}"
    )
    for name, (t, (n, total)) in results.items():
        ratio = f"{ref / t:>9.1f}x" if ref is not None else f"{'-':>10}"
        print(f"{name:34} {n:>10,} {total:>16.4f} {t:>9.3f} {n / t:>11,.0f} {ratio}")


if __name__ == "__main__":
    main()
