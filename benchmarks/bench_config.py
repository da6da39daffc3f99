"""Benchmark: what reading each run's configuration (sources/configs.py) adds to loading logs.

Usage:
    python benchmarks/bench_config.py [PATH ...] [--repeats 3]

Loads every PATH (default: each folder of ../shared/real_logs) with ``sources.load`` twice per
repeat, once as shipped and once with the config reader replaced by an empty RunConfig, and
prints the median total of each, the difference per run, and how many runs had a configuration.
Run with STABDIAG_NO_CACHE=1 so event files are parsed each time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from stabdiag import runconfig as rc
from stabdiag import sources
from stabdiag.sources import configs


def _load_all(paths: list[Path]) -> list[sources.RunInfo]:
    out: list[sources.RunInfo] = []
    for p in paths:
        out += sources.load([p]).runs
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    paths = args.paths or sorted(
        p
        for p in (Path(__file__).resolve().parents[2] / "shared" / "real_logs").iterdir()
        if p.is_dir()
    )
    runs = _load_all(paths)  # warm the OS page cache
    real = configs.read_safely
    with_cfg, without = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        _load_all(paths)
        with_cfg.append(time.perf_counter() - t0)
        configs.read_safely = lambda *a, **k: rc.RunConfig()  # noqa: E731
        try:
            t0 = time.perf_counter()
            _load_all(paths)
            without.append(time.perf_counter() - t0)
        finally:
            configs.read_safely = real
    a, b = statistics.median(with_cfg), statistics.median(without)
    found = sum(1 for r in runs if r.meta.get("run_config"))
    print(f"{len(runs)} runs in {len(paths)} paths; a configuration found for {found}")
    print(
        f"load with config reading {a:.2f} s, without {b:.2f} s: +{a - b:.2f} s "
        f"(+{1000 * (a - b) / max(len(runs), 1):.1f} ms per run)"
    )


if __name__ == "__main__":
    main()
