"""Per-detector cost on a long synthetic run (default 1M log points), or on many short runs.

    python benchmarks/bench_detectors.py [--points 1000000] [--repeat 3]
    python benchmarks/bench_detectors.py --short 10000

Builds one run with train/loss, train/grad_norm, train/lr, train/loss_scale, train/skipped_step,
train/max_attn_logit and train/output_logz (numpy, seeded; a few spikes, an fp16 overflow every
few thousand steps) and prints the best-of-``repeat`` wall time of each registered detector in ms,
then all of them together through ``run_detectors`` (which shares cached statistics between them).
Speed targets live here, not in timed tests: all detectors together well under 1 s on 1M points.

``--short N``: N runs of 20 log points with step, train/loss and train/grad_norm, the values
bench_walk.py writes to its CSV tree (parsed from the same 4-decimal text), each judged once by
every detector in registry order as analyze does (shared statistics cached per run); prints each
detector's CPU microseconds per run and the total. Target (issue 13 R4): all together <= 600 us.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from stabdiag.detectors import DETECTORS, _stats, run_detectors
from stabdiag.table import (
    GRAD_NORM,
    LOSS_SCALE,
    LR,
    MAX_ATTN_LOGIT,
    OUTPUT_LOGZ,
    SKIPPED_STEP,
    TRAIN_LOSS,
    RunData,
    Series,
)


def make_run(n: int, seed: int = 0) -> RunData:
    rng = np.random.default_rng(seed)
    steps = np.arange(n, dtype=np.int64)
    t = steps + 1.0
    loss = (8.0 * t**-0.3 + 2.0) * np.exp(0.02 * rng.standard_normal(n))
    spikes = rng.choice(n, 20, replace=False)
    loss[spikes] *= 3.0
    gn = np.exp(0.2 * rng.standard_normal(n)) * (1.0 + 5.0 * np.exp(-t / 500))
    gn[rng.choice(n, 50, replace=False)] *= 20.0
    warm = max(1, n // 100)
    lr = 3e-4 * np.minimum(1.0, t / warm) * 0.5 * (1 + np.cos(np.pi * steps / n))
    skipped = (rng.random(n) < 2e-4).astype(np.float64)
    scale = 2.0 ** (16 - np.minimum(6, np.cumsum(skipped) % 7))
    attn = 5.0 + 10.0 * steps / n + 0.3 * rng.standard_normal(n)
    logz = 10.0 - 2.0 * steps / n + 0.05 * rng.standard_normal(n)
    cols = {
        TRAIN_LOSS: loss,
        GRAD_NORM: gn,
        LR: lr,
        LOSS_SCALE: scale,
        SKIPPED_STEP: skipped,
        MAX_ATTN_LOGIT: attn,
        OUTPUT_LOGZ: logz,
    }
    return RunData(name="bench", series={m: Series(steps, v) for m, v in cols.items()})


def make_short_runs(count: int, points: int = 20) -> list[RunData]:
    """The runs of bench_walk.py's tree: a slowly falling loss and a slowly rising grad norm."""
    steps = np.arange(1, points + 1, dtype=np.int64)
    runs = []
    for i in range(count):
        loss = [float(f"{2.0 - s * 0.01 + (i % 7) * 1e-3:.4f}") for s in range(1, points + 1)]
        gn = [float(f"{0.5 + s * 1e-3:.4f}") for s in range(1, points + 1)]
        series = {TRAIN_LOSS: Series(steps, np.array(loss)), GRAD_NORM: Series(steps, np.array(gn))}
        runs.append(RunData(name=f"run{i:06d}", series=series))
    return runs


def short_main(count: int) -> None:
    """CPU microseconds per run of each detector over ``count`` short runs, then the total."""
    runs = make_short_runs(count)
    per = dict.fromkeys((d.kind for d in DETECTORS), 0.0)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for run in runs:
            for det in DETECTORS:
                t0 = time.process_time()
                det.check(run)
                per[det.kind] += time.process_time() - t0
    print(f"{count} runs of 20 log points, CPU us per run")
    for kind, sec in sorted(per.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:24s} {1e6 * sec / count:9.1f} us")
    print(f"  {'all detectors':24s} {1e6 * sum(per.values()) / count:9.1f} us")
    runs = make_short_runs(count)  # fresh arrays: nothing cached
    t0 = time.process_time()
    run_detectors(runs)
    print(f"  {'run_detectors':24s} {1e6 * (time.process_time() - t0) / count:9.1f} us")


def best_ms(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        clear = getattr(_stats, "clear_cache", None)
        if clear:
            clear()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return 1000 * best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--short",
        type=int,
        metavar="N",
        help="instead: N runs of 20 log points (bench_walk's tree), CPU us per run per detector",
    )
    args = ap.parse_args()
    if args.short:
        short_main(args.short)
        return
    run = make_run(args.points)
    print(f"{args.points} log points per series, best of {args.repeat}")
    total = 0.0
    for det in DETECTORS:
        ms = best_ms(lambda d=det: d.check(run), args.repeat)
        total += ms
        print(f"  {det.kind:24s} {ms:9.1f} ms")
    print(f"  {'sum (each alone)':24s} {total:9.1f} ms")
    ms = best_ms(lambda: run_detectors([run]), args.repeat)
    print(f"  {'run_detectors (shared)':24s} {ms:9.1f} ms")


if __name__ == "__main__":
    main()
