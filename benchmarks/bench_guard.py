"""What `stabdiag train --guard` costs: the Monitor's share of the training thread's CPU time.

    python benchmarks/bench_guard.py [--steps 400] [--rounds 3] [--preset tiny]

Rounds alternate guard=off, warn and skip in one process (same model, same batches). The time
spent inside the Monitor's entry points (log, log_series, close) is summed with thread CPU time,
which a loaded machine does not inflate the way it inflates wall time, and reported against the
whole run's thread CPU time. `tiny` is the worst case: the smallest step, the same Monitor work.
warn/stop feed the guard at the log interval (no host sync of their own); skip reads each step's
loss before the optimizer step (one sync per step, which on a CPU costs nothing extra).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--preset", default="tiny")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import torch

    from stabdiag.live import monitor
    from stabdiag.train import resolve, train

    torch.set_num_threads(1)
    inside = [0.0]

    def timed(fn):
        def wrapper(*a, **k):
            t = time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                inside[0] += time.thread_time() - t

        return wrapper

    for name in ("log", "log_series", "close"):
        setattr(monitor.Monitor, name, timed(getattr(monitor.Monitor, name)))
    base = [
        "threads=1",
        f"steps={args.steps}",
        "eval_interval=100000",
        "tensorboard=false",
        "checkpoint_interval=0",
    ]
    runs: dict[str, list[tuple[float, float]]] = {"off": [], "warn": [], "skip": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for guard in runs:
                inside[0] = 0.0
                cfg = resolve(
                    args.preset,
                    "stable",
                    overrides=[*base, f"out_dir={tmp}/{r}", f"guard={guard}", f"run_name={guard}"],
                )
                t = time.thread_time()
                train(cfg)
                runs[guard].append((time.thread_time() - t, inside[0]))
    print(f"{args.preset}, {args.steps} steps, {args.rounds} rounds, load {os.getloadavg()[0]:.1f}")
    for guard, got in runs.items():
        total = statistics.median(c for c, _ in got)
        mon = statistics.median(m for _, m in got)
        print(
            f"guard={guard:4s}  run {total:6.2f} s CPU ({1e3 * total / args.steps:.2f} ms/step)  "
            f"monitor {1e3 * mon:6.1f} ms ({1e3 * mon / args.steps:.3f} ms/step, "
            f"{100 * mon / total:.2f} % of the run)"
        )


if __name__ == "__main__":
    main()
