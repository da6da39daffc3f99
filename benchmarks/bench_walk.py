"""Benchmark: a log tree of many small runs (issue 13 R4: 100,000 files took 5 min 36 s; goal < 60 s).

Usage:
    python benchmarks/bench_walk.py                      # 100,000 small CSV runs, load + analyze
    python benchmarks/bench_walk.py --files 20000 --layout mix --profile 25
    python benchmarks/bench_walk.py --skip-load --skip-analyze --cli   # the command a user runs
    python benchmarks/bench_walk.py --dir /tmp/walk --keep   # reuse a generated tree next time

Generates ``--files`` small logs in a temporary directory (``--layout csv``: one ``<i>.csv`` per
run, 1,000 per folder; ``mix``: CSV, JSONL, ``metrics.csv`` run dirs with a ``run.json``, and
nanoGPT text logs in equal parts, plus non-log files a walk must pass over), then times in
this process, after imports:

- ``load``: ``stabdiag.sources.load`` (walk, sniff, group, read, name, map every run);
- ``analyze``: ``stabdiag.analyze`` (load + every detector on every run), with the cache off;
- ``cli`` (``--cli``): ``stabdiag analyze TREE --no-cache`` in a fresh process, its text report
  read from a pipe: what a user waits for (start-up, analysis with the default ``--jobs``, report).

``--layout spiky`` is ``csv`` with a 6x loss spike in every 10th run (findings, diagnoses and
advice on a tenth of the runs, not only clean ones).

Wall and CPU seconds are both printed: on a shared machine the CPU time is the steadier number.

``--profile N`` prints the N most expensive functions (cumulative) of one ``load`` under
cProfile. Timings depend on the machine and its load; run it on an idle machine for the
numbers that go into a report.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["STABDIAG_NO_CACHE"] = "1"  # every run is parsed: the walk is measured, not the cache

PER_DIR = 1000
STEPS = 20


def _csv(i: int, spiky: bool = False) -> str:
    def loss(s: int) -> float:
        v = 2.0 - s * 0.01 + (i % 7) * 1e-3
        return v * 6.0 if spiky and i % 10 == 0 and s == 15 else v  # a spike in every 10th run

    rows = "".join(f"{s},{loss(s):.4f},{0.5 + s * 1e-3:.4f}\n" for s in range(1, STEPS + 1))
    return "step,loss,grad_norm\n" + rows


def generate(root: Path, n: int, layout: str) -> Path:
    """``n`` small runs under ``root/tree`` (kept when already generated with the same flags)."""
    tree = root / "tree"
    marker = root / f".generated_{layout}_{n}"
    if marker.exists():
        return tree
    shutil.rmtree(tree, ignore_errors=True)
    t0 = time.perf_counter()
    for i in range(n):
        d = tree / f"group{i // PER_DIR:04d}"
        if i % PER_DIR == 0:
            d.mkdir(parents=True)
        kind = i % 4 if layout == "mix" else 0
        if kind == 0:
            (d / f"run{i:06d}.csv").write_text(_csv(i, spiky=layout == "spiky"))
        elif kind == 1:
            lines = "".join(
                json.dumps({"step": s, "loss": 2.0 - s * 0.01 + i * 1e-6, "lr": 1e-3}) + "\n"
                for s in range(1, STEPS + 1)
            )
            (d / f"run{i:06d}.jsonl").write_text(lines)
        elif kind == 2:
            r = d / f"run{i:06d}"
            r.mkdir()
            (r / "metrics.csv").write_text(_csv(i))
            (r / "run.json").write_text(json.dumps({"seed": i}))
            (r / "README.txt").write_text("notes, not a log\n")
        else:
            lines = "".join(
                f"iter {s}: loss {2.0 - s * 0.01:.4f}, time 12.5ms, mfu 30.0%\n"
                for s in range(STEPS)
            )
            (d / f"run{i:06d}.log").write_text(lines)
    marker.touch()
    print(f"generated {n} runs ({layout}) in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return tree


def _cpu() -> float:
    """CPU seconds of this process and its finished workers (analyze --jobs N uses processes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _loadavg() -> str:
    """The 1-minute load average as the timing ends (the machine may be shared)."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=100_000, help="runs to generate (default 100000)")
    ap.add_argument("--layout", choices=("csv", "mix", "spiky"), default="csv")
    ap.add_argument("--dir", type=Path, help="where to generate (default: a temporary dir)")
    ap.add_argument("--keep", action="store_true", help="keep the generated tree for the next run")
    ap.add_argument("--skip-analyze", action="store_true", help="time load only")
    ap.add_argument(
        "--cli",
        action="store_true",
        help="also time the command a user runs: stabdiag analyze TREE --no-cache (text report "
        "to a pipe, default --jobs), in a fresh process",
    )
    ap.add_argument("--skip-load", action="store_true", help="time analyze only (it loads too)")
    ap.add_argument(
        "--jobs", type=int, default=1, help="analyze's worker processes (default 1, as analyze)"
    )
    ap.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="print the N most expensive functions of one load (cProfile)",
    )
    args = ap.parse_args()

    import stabdiag
    from stabdiag.sources import load

    root = args.dir or Path(tempfile.mkdtemp(prefix="stabdiag_walk_"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        tree = generate(root, args.files, args.layout)
        if not args.skip_load:
            t0, c0 = time.perf_counter(), time.process_time()
            res = load([tree])
            t_load, c_load = time.perf_counter() - t0, time.process_time() - c0
            print(
                f"load     {args.files:>7} runs ({args.layout}): {t_load:7.1f} s wall, "
                f"{c_load:.1f} s CPU  "
                f"({len(res.runs)} runs, {len(res.table)} rows, {len(res.errors)} errors)"
                f"  load average {_loadavg()}"
            )
            if len(res.runs) != args.files:
                sys.exit(f"expected {args.files} runs, got {len(res.runs)}")
        if not args.skip_analyze and hasattr(stabdiag, "analyze"):
            t0, c0 = time.perf_counter(), _cpu()
            report = stabdiag.analyze(tree, cache=False, jobs=args.jobs)
            t_an, c_an = time.perf_counter() - t0, _cpu() - c0
            print(
                f"analyze  {args.files:>7} runs ({args.layout}, --jobs {args.jobs}): "
                f"{t_an:7.1f} s wall, {c_an:.1f} s CPU incl. workers  "
                f"({len(report.runs)} runs, {len(report.findings)} findings)"
                f"  load average {_loadavg()}"
            )
        if args.cli:
            cmd = [sys.executable, "-m", "stabdiag", "analyze", str(tree), "--no-cache"]
            cmd += ["--fail-on", "never"]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, check=False)
            wall = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            lines = done.stdout.count(b"\n")
            print(
                f"cli      {args.files:>7} runs ({args.layout}): {wall:7.1f} s wall, {cpu:.1f} s CPU "
                f"incl. workers  (exit {done.returncode}, {lines} report lines)"
                f"  load average {_loadavg()}"
            )
            if done.returncode not in (0, 1):
                sys.exit(done.stderr.decode(errors="replace")[-2000:])
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            load([tree])
            prof.disable()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(args.profile)
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
