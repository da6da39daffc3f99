"""What an HTML report with plots costs next to the text report of the same runs (issue 15 item 13).

Times, end to end as a user runs them (a fresh ``python -m stabdiag`` each time, parsed-log cache
warm after the first run):

- ``analyze LOGS -f text``                        the baseline
- ``analyze LOGS -f html --plots DIR --jobs 1``   a PNG per run (the default), drawn in this process
- ``analyze LOGS -f html --plots DIR --jobs 2``   the same, drawn in two worker processes
- ``analyze LOGS -f html``                        the page alone (its PNGs drawn by the renderer)

and prints, per command, the median wall time and the median CPU time (user + system of the
command and its workers) over ``--repeat`` rounds, the ratio to the text report, and the load
average around each round: on a shared machine the wall time says as much about the neighbours as
about the code, the CPU time less so.

    python benchmarks/bench_report.py                       # all of ../shared/real_logs
    python benchmarks/bench_report.py --logs DIR --repeat 5
    python benchmarks/bench_report.py --src /tmp/old-checkout   # the same against another tree
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL_LOGS = ROOT.parent / "shared" / "real_logs"


def cases(logs: Path, tmp: Path) -> dict[str, list[str]]:
    base = ["analyze", str(logs)]
    return {
        "text": [*base, "-f", "text", "-o", str(tmp / "r.txt")],
        "html --plots, jobs 1": [
            *base,
            "-f",
            "html",
            "-o",
            str(tmp / "r1.html"),
            "--plots",
            str(tmp / "p1"),
            "--jobs",
            "1",
        ],
        "html --plots, jobs 2": [
            *base,
            "-f",
            "html",
            "-o",
            str(tmp / "r2.html"),
            "--plots",
            str(tmp / "p2"),
            "--jobs",
            "2",
        ],
        "html (embedded PNGs)": [*base, "-f", "html", "-o", str(tmp / "r3.html")],
    }


def run_once(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system of the command and of every worker it reaped)."""
    with tempfile.TemporaryFile() as errf:
        t0 = time.perf_counter()
        # cwd: the temp dir, so ``-m stabdiag`` imports the tree asked for (--src), not ./stabdiag.
        proc = subprocess.Popen(
            [sys.executable, "-m", "stabdiag", *args],
            env=env,
            cwd=tempfile.gettempdir(),
            stdout=subprocess.DEVNULL,
            stderr=errf,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode not in (0, 1):
            errf.seek(0)
            tail = errf.read().decode(errors="replace").strip()[-500:]
            raise SystemExit(f"stabdiag {' '.join(args)} exited {proc.returncode}: {tail}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--logs", type=Path, default=REAL_LOGS, help="folder of runs (default: ../shared/real_logs)"
    )
    ap.add_argument("--repeat", type=int, default=3, help="rounds; the median is reported")
    ap.add_argument(
        "--src", type=Path, default=None, help="import stabdiag from this source tree instead"
    )
    ap.add_argument(
        "--only", action="append", default=None, help="run only cases whose name contains this"
    )
    a = ap.parse_args()
    if not a.logs.is_dir():
        raise SystemExit(f"{a.logs}: expected a folder of training logs")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if a.src is not None:
        env["PYTHONPATH"] = str(a.src.resolve()) + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        todo = {
            k: v for k, v in cases(a.logs, tmp).items() if not a.only or any(o in k for o in a.only)
        }
        run_once(
            todo.get("text", next(iter(todo.values()))), env
        )  # warm the parsed-log cache and the disk
        walls: dict[str, list[float]] = {k: [] for k in todo}
        cpus: dict[str, list[float]] = {k: [] for k in todo}
        loads = []
        for _ in range(a.repeat):
            loads.append(os.getloadavg()[0])
            for name, args in todo.items():
                w, c = run_once(args, env)
                walls[name].append(w)
                cpus[name].append(c)
            loads.append(os.getloadavg()[0])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"logs: {a.logs} · source: {a.src or ROOT} · {a.repeat} rounds · {cores} cores · "
        f"1-min load average during the rounds {min(loads):.1f}-{max(loads):.1f}"
    )
    base_w = statistics.median(walls["text"]) if "text" in walls else None
    base_c = statistics.median(cpus["text"]) if "text" in cpus else None
    print(f"{'command':<24} {'wall s':>8} {'x text':>7} {'cpu s':>8} {'x text':>7}   rounds (wall)")
    for name in todo:
        w, c = statistics.median(walls[name]), statistics.median(cpus[name])
        rw = f"{w / base_w:.2f}" if base_w else "-"
        rc = f"{c / base_c:.2f}" if base_c else "-"
        print(
            f"{name:<24} {w:>8.2f} {rw:>7} {c:>8.2f} {rc:>7}   {', '.join(f'{x:.2f}' for x in walls[name])}"
        )


if __name__ == "__main__":
    main()
