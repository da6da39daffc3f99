"""Whole-process performance benchmark: stabdiag vs tbparse vs EventAccumulator vs the framing floor.

Usage (from the repo root; DIR is a scratch folder outside the repo, reused between runs):
    python benchmarks/bench_perf.py --dir /tmp/stabdiag_perf [--events 1000000 10000000]
        [--repeats 3] [--runs50 100000] [--slow-repeats 1] [--skip-slow-above 3000000]

For each size N it makes DIR/N/tb (N/20 steps x 20 tags written by torch's SummaryWriter with the
deterministic data of research/perf/gen.py; an existing run is reused), then times every method
as its own process under GNU ``/usr/bin/time -v`` (wall clock and peak RSS; median of --repeats,
methods interleaved round-robin):

  analyze-cold   ``stabdiag analyze DIR --no-cache`` (read + map + all detectors + text report)
  analyze-warm   the same with the parsed-log cache filled by an untimed run before
  load           ``stabdiag.sources.load`` into the long DataFrame (no cache), nothing else
  tbparse        ``tbparse.SummaryReader(dir).scalars``                  (research/perf/load.py)
  ea             ``EventAccumulator`` + ``Scalars(tag)`` -> DataFrame    (research/perf/load.py)
  npframe        framing floor: Python header loop + numpy decode, no CRC (research/perf/load.py)
  noop           python + ``import pandas``: the start-up cost of any pandas CLI

tbparse and EventAccumulator take minutes above --skip-slow-above events; there they run
--slow-repeats times (0 = skipped; their ratios then use the 1M rate, marked "est").
Then a directory of 50 runs (copies of one --runs50-event run) is analyzed cold with --jobs 1
and with all cores, and warm. Every loader's row count and value sum are cross-checked.
Last, ``sources.load`` of a --tabular-line wide CSV (step, loss, lr) and the same rows as JSONL.

Targets (issue 9), checked and printed as PASS/FAIL: load >= 10x faster than tbparse and
EventAccumulator and <= 2x the npframe floor (1M, whole process, CRCs verified by stabdiag only);
analyze-cold <= 3 s at 1M; peak RSS < 1.5 GB at 10M (load and analyze); 50 runs: --jobs 2
faster than --jobs 1; the 1M-line CSV loads in <= 2 s in-process. Writes benchmarks/results/perf.json. The machine's load (uptime) is
recorded before and after: on a shared machine read ratios, not absolute seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESEARCH = REPO.parent / "shared" / "docs" / "research" / "perf"
TAGS = 20


# --------------------------------------------------------------------------- data


def synth(n: int, k: int = TAGS, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """research/perf/gen.py's data: loss with decaying spikes, lognormal grad norms, warmup+cosine
    lr, an AMP loss scale that halves on rare overflows; float32 like loss.item()."""
    rng = np.random.default_rng(seed)
    steps = np.arange(n, dtype=np.float64)
    tags = ["train/loss", "train/grad_norm", "train/lr", "train/loss_scale"][:k] + [
        f"layers.{i}.grad_norm" for i in range(max(0, k - 4))
    ]
    loss = 2.5 * np.exp(-steps / max(n / 3, 1)) + 1.5 + 0.05 * rng.standard_normal(n)
    spike = np.zeros(n)
    for s in rng.choice(n, size=min(8, n), replace=False):
        e = min(n, s + 20)
        spike[s:e] += 3.0 * np.exp(-np.arange(e - s) / 5.0)
    loss += spike
    gnorm = np.exp(0.3 * rng.standard_normal(n)) * (1.0 + 4.0 * spike)
    warm = max(1, min(2000, n // 10))
    lr = np.where(
        steps < warm,
        3e-4 * steps / warm,
        3e-5 + 0.5 * (3e-4 - 3e-5) * (1 + np.cos(np.pi * (steps - warm) / max(n - warm, 1))),
    )
    overflow = rng.random(n) < 1e-3
    scale = np.empty(n)
    cur, clean = 65536.0, 0
    for i in range(n):
        if overflow[i]:
            cur, clean = max(cur / 2, 1.0), 0
        else:
            clean += 1
            if clean >= 2000:
                cur, clean = min(cur * 2, 2.0**24), 0
        scale[i] = cur
    cols = [loss, gnorm, lr, scale][:k]
    for i in range(max(0, k - 4)):
        cols.append(np.exp(0.4 * rng.standard_normal(n)) * (0.05 + 0.01 * i) * (1.0 + 2.0 * spike))
    return tags, np.stack(cols, axis=1).astype(np.float32)


def generate(run_dir: Path, events: int) -> Path:
    """DIR/tb with ``events`` scalars (reused when its marker says it is complete)."""
    tb = run_dir / "tb"
    marker = run_dir / f".complete_{events}"
    if marker.exists() and any(tb.glob("events.out.tfevents*")):
        return tb
    from torch.utils.tensorboard import SummaryWriter

    shutil.rmtree(tb, ignore_errors=True)
    tb.mkdir(parents=True)
    tags, vals = synth(events // TAGS)
    t0 = time.perf_counter()
    w = SummaryWriter(log_dir=str(tb))
    for step, row in enumerate(vals.tolist()):
        for j, v in enumerate(row):
            w.add_scalar(tags[j], v, step)
    w.close()
    print(f"  wrote {events:,} scalars in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    marker.touch()
    return tb


# --------------------------------------------------------------------------- timing

LOAD_SNIPPET = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from stabdiag import sources
t1 = time.perf_counter()
f = sources.load([sys.argv[1]]).table.frame
t2 = time.perf_counter()
print(json.dumps({"rows": len(f), "tags": int(f["metric"].nunique()),
                  "value_sum": float(f["value"].astype("float64").sum()),
                  "import_s": t1 - t0, "load_s": t2 - t1}))
"""


def timed(cmd: list[str], env: dict[str, str] | None = None, ok_codes=(0,)) -> dict:
    """Run ``cmd`` under GNU time -v: wall s, peak RSS MB, and its last stdout line if JSON."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        p = subprocess.run(
            ["/usr/bin/time", "-v", "-o", tf.name, *cmd],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
        )
        report = Path(tf.name).read_text()
    if p.returncode not in ok_codes:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr[-2000:]}")
    m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", report)
    parts = [float(x) for x in m.group(1).split(":")]
    wall = sum(x * 60**i for i, x in enumerate(reversed(parts)))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", report).group(1)) / 1024
    out = {"wall_s": wall, "rss_mb": rss}
    last = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    if last.startswith("{"):
        with contextlib.suppress(ValueError):
            out["out"] = json.loads(last)
    return out


def methods_for(run: Path, tb: Path, cache: Path, slow: bool) -> dict[str, tuple[list[str], dict]]:
    py = sys.executable
    stabdiag = [py, "-m", "stabdiag", "analyze", str(tb), "-o", os.devnull]
    cached = {"STABDIAG_CACHE_DIR": str(cache)}
    m = {
        "analyze-cold": (stabdiag + ["--no-cache"], cached),
        "analyze-warm": (stabdiag, cached),
        "load": ([py, "-c", LOAD_SNIPPET, str(tb)], {"STABDIAG_NO_CACHE": "1"}),
        "npframe": ([py, str(RESEARCH / "load.py"), "--method", "npframe", "--path", str(run)], {}),
        "noop": ([py, str(RESEARCH / "load.py"), "--method", "noop", "--path", str(run)], {}),
    }
    if slow:
        for k in ("tbparse", "ea"):
            m[k] = ([py, str(RESEARCH / "load.py"), "--method", k, "--path", str(run)], {})
    return m


def bench_size(root: Path, events: int, repeats: int, slow_repeats: int, slow: bool) -> dict:
    run = root / str(events)
    tb = generate(run, events)
    cache = root / "cache"
    meths = methods_for(run, tb, cache, slow)
    # analyze exits 1 when it finds errors (the spikes are real): that is not a failure here.
    ok = {"analyze-cold": (0, 1), "analyze-warm": (0, 1)}
    timed(meths["analyze-warm"][0], meths["analyze-warm"][1], ok["analyze-warm"])  # fill the cache
    res: dict[str, list[dict]] = {k: [] for k in meths}
    for i in range(repeats):
        for k, (cmd, env) in meths.items():
            if k in ("tbparse", "ea") and i >= slow_repeats:
                continue
            r = timed(cmd, env, ok.get(k, (0,)))
            res[k].append(r)
            print(
                f"  {events:>10,} {k:<13} {r['wall_s']:7.2f} s {r['rss_mb']:7.0f} MB",
                file=sys.stderr,
            )
    out = {
        "events": events,
        "bytes": sum(f.stat().st_size for f in tb.glob("events*")),
        "methods": {},
    }
    for k, rs in res.items():
        if not rs:
            continue
        out["methods"][k] = {
            "wall_s": statistics.median(r["wall_s"] for r in rs),
            "rss_mb": statistics.median(r["rss_mb"] for r in rs),
            "runs": [round(r["wall_s"], 2) for r in rs],
            "check": next((r["out"] for r in rs if "out" in r), None),
        }
    checks = {
        k: (v["check"]["rows"], v["check"]["value_sum"])
        for k, v in out["methods"].items()
        if v["check"] and "value_sum" in v["check"]
    }
    out["cross_check"] = {k: list(v) for k, v in checks.items()}
    out["cross_check_ok"] = (
        len({v[0] for v in checks.values()}) <= 1
        and (
            max(v[1] for v in checks.values()) - min(v[1] for v in checks.values())
            <= 1e-6 * max(1.0, abs(max(v[1] for v in checks.values())))
        )
        if checks
        else None
    )
    return out


def generate_tabular(root: Path, lines: int) -> dict[str, Path]:
    """A wide CSV (step, loss, lr) and the same rows as JSON Lines, ``lines`` rows each."""
    d = root / f"tabular_{lines}"
    out = {"csv": d / "wide.csv", "jsonl": d / "wide.jsonl"}
    if (d / ".complete").exists():
        return out
    d.mkdir(parents=True, exist_ok=True)
    tags, vals = synth(lines, k=3)
    loss, lr = vals[:, 0].astype(np.float64).tolist(), vals[:, 2].astype(np.float64).tolist()
    with open(out["csv"], "w") as fh:
        fh.write("step,loss,lr\n")
        fh.writelines(f"{i},{a!r},{b!r}\n" for i, (a, b) in enumerate(zip(loss, lr, strict=True)))
    with open(out["jsonl"], "w") as fh:
        fh.writelines(
            json.dumps({"step": i, "loss": a, "lr": b}) + "\n"
            for i, (a, b) in enumerate(zip(loss, lr, strict=True))
        )
    (d / ".complete").touch()
    return out


def bench_tabular(root: Path, lines: int, repeats: int) -> dict:
    """``sources.load`` of a ``lines``-row wide CSV and JSONL, as whole processes."""
    files = generate_tabular(root, lines)
    py = sys.executable
    out: dict = {"lines": lines, "methods": {}}
    for k, f in files.items():
        rs = []
        for _ in range(repeats):
            r = timed([py, "-c", LOAD_SNIPPET, str(f)], {"STABDIAG_NO_CACHE": "1"})
            rs.append(r)
            print(
                f"  {lines:>10,} {k + ' load':<13} {r['wall_s']:7.2f} s {r['rss_mb']:7.0f} MB "
                f"(in-process {r['out']['load_s']:.2f} s)",
                file=sys.stderr,
            )
        out["methods"][k] = {
            "wall_s": statistics.median(r["wall_s"] for r in rs),
            "load_s": statistics.median(r["out"]["load_s"] for r in rs),
            "rss_mb": statistics.median(r["rss_mb"] for r in rs),
            "runs": [round(r["wall_s"], 2) for r in rs],
            "check": rs[0]["out"],
        }
    checks = {
        (m["check"]["rows"], round(m["check"]["value_sum"], 6)) for m in out["methods"].values()
    }
    out["cross_check_ok"] = len(checks) == 1
    return out


def bench_dir50(root: Path, events: int, repeats: int) -> dict:
    src = generate(root / f"one_{events}", events)
    d = root / f"runs50_{events}"
    if not (d / ".complete").exists():
        shutil.rmtree(d, ignore_errors=True)
        for i in range(50):
            (d / f"run{i:02d}").mkdir(parents=True)
            for f in src.glob("events*"):
                shutil.copy(f, d / f"run{i:02d}" / f.name)
        (d / ".complete").touch()
    py = sys.executable
    base = [py, "-m", "stabdiag", "analyze", str(d), "-o", os.devnull]
    cached = {"STABDIAG_CACHE_DIR": str(root / "cache")}
    meths = {
        "analyze-cold-jobs1": (base + ["--no-cache", "--jobs", "1"], cached),
        "analyze-cold": (base + ["--no-cache"], cached),
        "analyze-warm": (base, cached),
    }
    timed(base, cached, (0, 1))
    res: dict[str, list[dict]] = {k: [] for k in meths}
    for _ in range(repeats):
        for k, (cmd, env) in meths.items():
            r = timed(cmd, env, (0, 1))
            res[k].append(r)
            print(
                f"  50 runs    {k:<18} {r['wall_s']:7.2f} s {r['rss_mb']:7.0f} MB", file=sys.stderr
            )
    return {
        "runs": 50,
        "events_per_run": events,
        "methods": {
            k: {
                "wall_s": statistics.median(r["wall_s"] for r in rs),
                "rss_mb": statistics.median(r["rss_mb"] for r in rs),
                "runs": [round(r["wall_s"], 2) for r in rs],
            }
            for k, rs in res.items()
        },
    }


# --------------------------------------------------------------------------- report


def table(results: dict) -> str:
    lines = [
        "| events | method | wall s (median) | peak RSS MB | tbparse / this | EA / this | this / npframe |",
        "|---|---|---|---|---|---|---|",
    ]
    rate = {}  # seconds per event of tbparse/ea at the largest size measured, for estimates
    for size in results["sizes"]:
        for k in ("tbparse", "ea"):
            if k in size["methods"]:
                rate[k] = size["methods"][k]["wall_s"] / size["events"]
    for size in results["sizes"]:
        m = size["methods"]
        n = size["events"]
        ref = {}
        for k in ("tbparse", "ea"):
            if k in m:
                ref[k] = (m[k]["wall_s"], "")
            elif k in rate:
                ref[k] = (rate[k] * n, " est")
        floor = m.get("npframe", {}).get("wall_s")
        for k, v in m.items():
            w = v["wall_s"]
            r1 = f"{ref['tbparse'][0] / w:.1f}x{ref['tbparse'][1]}" if "tbparse" in ref else "-"
            r2 = f"{ref['ea'][0] / w:.1f}x{ref['ea'][1]}" if "ea" in ref else "-"
            r3 = f"{w / floor:.2f}" if floor else "-"
            lines.append(f"| {n:,} | {k} | {w:.2f} | {v['rss_mb']:.0f} | {r1} | {r2} | {r3} |")
    if results.get("dir50"):
        d = results["dir50"]
        for k, v in d["methods"].items():
            lines.append(
                f"| 50 x {d['events_per_run']:,} | {k} | {v['wall_s']:.2f} | {v['rss_mb']:.0f} | - | - | - |"
            )
    if results.get("tabular"):
        t = results["tabular"]
        for k, v in t["methods"].items():
            lines.append(
                f"| {t['lines']:,} lines | {k} load (in-process {v['load_s']:.2f} s) | "
                f"{v['wall_s']:.2f} | {v['rss_mb']:.0f} | - | - | - |"
            )
    return "\n".join(lines)


def verdicts(results: dict) -> list[tuple[str, bool]]:
    out = []
    by = {s["events"]: s["methods"] for s in results["sizes"]}
    m1 = by.get(1_000_000)
    if m1:
        w = m1["load"]["wall_s"]
        for k in ("tbparse", "ea"):
            if k in m1:
                out.append(
                    (
                        f"1M load >= 10x faster than {k} ({m1[k]['wall_s'] / w:.1f}x)",
                        m1[k]["wall_s"] / w >= 10,
                    )
                )
        if "npframe" in m1:
            out.append(
                (
                    f"1M load <= 2x npframe floor ({w / m1['npframe']['wall_s']:.2f}x)",
                    w <= 2 * m1["npframe"]["wall_s"],
                )
            )
        out.append(
            (
                f"1M analyze cold <= 3 s ({m1['analyze-cold']['wall_s']:.2f} s)",
                m1["analyze-cold"]["wall_s"] <= 3.0,
            )
        )
        out.append(
            (
                f"1M analyze warm < cold ({m1['analyze-warm']['wall_s']:.2f} s)",
                m1["analyze-warm"]["wall_s"] < m1["analyze-cold"]["wall_s"],
            )
        )
    m10 = by.get(10_000_000)
    if m10:
        for k in ("load", "analyze-cold", "analyze-warm"):
            out.append(
                (f"10M {k} peak RSS < 1.5 GB ({m10[k]['rss_mb']:.0f} MB)", m10[k]["rss_mb"] < 1536)
            )
    if results.get("dir50"):
        d = results["dir50"]["methods"]
        out.append(
            (
                f"50 runs: all cores faster than --jobs 1 ({d['analyze-cold']['wall_s']:.2f} vs "
                f"{d['analyze-cold-jobs1']['wall_s']:.2f} s)",
                d["analyze-cold"]["wall_s"] < d["analyze-cold-jobs1"]["wall_s"],
            )
        )
    if results.get("tabular"):
        t = results["tabular"]
        c = t["methods"]["csv"]["load_s"]
        out.append((f"{t['lines']:,}-line CSV load <= 2 s in-process ({c:.2f} s)", c <= 2.0))
        out.append(("CSV and JSONL loads agree (rows, value sum)", bool(t["cross_check_ok"])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "stabdiag_perf")
    ap.add_argument("--events", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--slow-repeats",
        type=int,
        default=1,
        help="tbparse/EventAccumulator runs above --skip-slow-above (0 = skip)",
    )
    ap.add_argument("--skip-slow-above", type=int, default=3_000_000)
    ap.add_argument(
        "--runs50", type=int, default=100_000, help="events per run of the 50-run dir (0 = skip)"
    )
    ap.add_argument(
        "--tabular",
        type=int,
        default=1_000_000,
        help="lines of the wide CSV / JSONL load case (0 = skip)",
    )
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "perf.json")
    a = ap.parse_args()
    if not (RESEARCH / "load.py").exists():
        sys.exit(f"needs the research loaders in {RESEARCH}")
    a.dir.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "uptime_before": os.popen("uptime").read().strip(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "sizes": [],
    }
    for n in a.events:
        big = n > a.skip_slow_above
        slow_rep = a.slow_repeats if big else a.repeats
        results["sizes"].append(bench_size(a.dir, n, a.repeats, slow_rep, slow=slow_rep > 0))
        save(a.out, results)  # partial results survive a later failure
    if a.runs50:
        results["dir50"] = bench_dir50(a.dir, a.runs50, a.repeats)
    if a.tabular:
        results["tabular"] = bench_tabular(a.dir, a.tabular, a.repeats)
    results["uptime_after"] = os.popen("uptime").read().strip()
    results["verdicts"] = [{"check": c, "pass": ok} for c, ok in verdicts(results)]
    print(table(results))
    print()
    for c, ok in verdicts(results):
        print(f"{'PASS' if ok else 'FAIL'}  {c}")
    print(f"\nload: {results['uptime_before']}  ->  {results['uptime_after']}")
    save(a.out, results)


def save(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
