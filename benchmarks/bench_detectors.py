"""Per-detector cost on a long synthetic run (default 1M log points).

    python benchmarks/bench_detectors.py [--points 1000000] [--repeat 3]

Builds one run with train/loss, train/grad_norm, train/lr, train/loss_scale, train/skipped_step,
train/max_attn_logit and train/output_logz (numpy, seeded; a few spikes, an fp16 overflow every
few thousand steps) and prints the best-of-``repeat`` wall time of each registered detector in ms,
then all of them together through ``run_detectors`` (which shares cached statistics between them).
Speed targets live here, not in timed tests: all detectors together well under 1 s on 1M points.
"""

from __future__ import annotations

import argparse
import time

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
    args = ap.parse_args()
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
