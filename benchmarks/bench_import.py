"""How long ``import stabdiag`` takes, and what it drags in: the facade loads lazily (issue 16).

Run: ``python benchmarks/bench_import.py [--repeat 7]``. Each sample is a fresh interpreter; the
interpreter's own start-up (``python -c pass``) is subtracted. Prints the median and whether
pandas, numpy or torch were imported.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

PROBE = (
    "import sys, stabdiag; print(','.join(sorted({'pandas', 'numpy', 'torch'} & set(sys.modules))))"
)


def _time(code: str) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return time.perf_counter() - t, out.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7, help="fresh interpreters per measurement")
    args = ap.parse_args()
    base = statistics.median(_time("pass")[0] for _ in range(args.repeat))
    samples = [_time(PROBE) for _ in range(args.repeat)]
    ms = statistics.median(s for s, _ in samples) - base
    heavy = samples[-1][1] or "none"
    print(
        f"import stabdiag: {ms * 1000:.0f} ms over interpreter start-up (median of {args.repeat}); "
        f"heavy modules imported: {heavy}"
    )
    ms_api = (
        statistics.median(_time("import stabdiag; stabdiag.analyze")[0] for _ in range(args.repeat))
        - base
    )
    print(f"import stabdiag + first use of stabdiag.analyze: {ms_api * 1000:.0f} ms")


if __name__ == "__main__":
    main()
