"""`stabdiag verify` on CPU: the issue's measurement (a), end to end in fresh processes.

    python benchmarks/bench_verify.py [--steps 200] [--at 120] [--interval 50] [--remedies 3] [--jobs 1]
    python benchmarks/bench_verify.py --proxy RUN [--jobs 1]     # measurements (b) and (c)

Trains `stabdiag train --preset tiny --inject bad_batch@AT --set checkpoint_interval=INTERVAL
--steps STEPS`, then runs `stabdiag verify` on it twice: the first run trains the control and the
remedy branches (wall time), the second finds them finished and only re-analyses (the resume
cost). Prints both wall times, the load average and the verify table. Subprocesses get
OMP_NUM_THREADS=1 and `--set threads=1`, as the tests do; numbers on a shared machine drift with
its load.

`--proxy RUN`: `stabdiag verify RUN --proxy` on any run's logs (e.g. ../shared/real_logs/
cs336_tinystories_lr1, a run at peak LR 1.0, or a healthy one): wall time and the table, proxy
runs in a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _load() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _run(argv: list[str]) -> tuple[float, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "stabdiag", *argv], capture_output=True, text=True, env=env
    )
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return wall, done.stdout


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--at", type=int, default=120)
    ap.add_argument("--interval", type=int, default=50)
    ap.add_argument("--remedies", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument(
        "--proxy", type=Path, default=None, help="verify --proxy on this run's logs instead"
    )
    args = ap.parse_args()
    if args.proxy is not None:
        with tempfile.TemporaryDirectory() as tmp:
            argv = [
                "verify",
                str(args.proxy),
                "--proxy",
                "--proxy-out",
                tmp,
                "--remedies",
                str(args.remedies),
                "--jobs",
                str(args.jobs),
            ]
            wall, table = _run(argv)
        print(f"load average {_load()}")
        print(f"verify --proxy {args.proxy} (--jobs {args.jobs}): {wall:.1f} s")
        print(table)
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        train_s, _ = _run(
            [
                "train",
                "--preset",
                "tiny",
                "--inject",
                f"bad_batch@{args.at}",
                "--steps",
                str(args.steps),
                "--set",
                f"checkpoint_interval={args.interval}",
                "--set",
                "threads=1",
                "--out",
                str(out),
                "--name",
                "spiky",
                "--no-analyze",
            ]
        )
        verify = [
            "verify",
            str(out / "spiky"),
            "--remedies",
            str(args.remedies),
            "--jobs",
            str(args.jobs),
        ]
        verify_s, table = _run(verify)
        again_s, _ = _run(verify)
    print(f"load average {_load()}")
    print(f"train parent ({args.steps} steps): {train_s:.1f} s")
    print(
        f"verify (control + up to {args.remedies} remedies, --jobs {args.jobs}): {verify_s:.1f} s"
    )
    print(f"verify again (all branches finished: re-analysis only): {again_s:.1f} s")
    print(table)


if __name__ == "__main__":
    main()
