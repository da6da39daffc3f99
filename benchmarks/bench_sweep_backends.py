"""Sweep backends: one grid (settings x LRs x seeds) under `local` and under `ray`, wall time each.

Checks that both give the same per-cell numbers (same seeds, same threads per cell) and prints
each setting's LR sensitivity with its interval over seeds, and whether the settings' difference
is larger than the seed spread. Both backends get the same CPUs: `--cpus` workers of one thread
locally, a local Ray cluster of `--cpus` CPUs with one CPU per cell.

    python benchmarks/bench_sweep_backends.py [--steps 100] [--cpus 2] [--out runs/bench-sweep]

Writes `<out>/backends.json` (wall times, per-setting numbers, equality check).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from pathlib import Path

from stabdiag.render.sweep import comparison_line
from stabdiag.sweep import build_spec, parse_lrs, parse_setting, run_sweep, save_outputs

NUMBERS = (
    "final_loss",
    "best_loss",
    "initial_loss",
    "max_attn_logit",
    "logz_drift",
    "findings",
    "steps_done",
)


def _grid(args: argparse.Namespace, out: Path):
    return build_spec(
        preset="tiny",
        recipe="stable",
        lrs=parse_lrs(args.lrs),
        settings=[parse_setting("baseline"), parse_setting("qk_norm=true")],
        common=[f"steps={args.steps}", "tensorboard=false"],
        out_dir=out,
        seeds=args.seeds,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lrs", default="3e-3,1e-2,3e-2,1e-1")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-sweep"))
    args = ap.parse_args()
    import ray

    shutil.rmtree(args.out, ignore_errors=True)
    runs = {}
    for backend in ("local", "ray"):
        spec = _grid(args, args.out / backend)
        t0 = time.perf_counter()
        if backend == "ray":  # a local cluster of the same size as the local backend's workers
            ray.init(
                num_cpus=args.cpus,
                include_dashboard=False,
                log_to_driver=False,
                logging_level="ERROR",
            )
            res = run_sweep(spec, backend="ray", cpus_per_cell=1)
            ray.shutdown()
        else:
            res = run_sweep(spec, jobs=args.cpus, cpus_per_cell=1)
        wall = time.perf_counter() - t0
        runs[backend] = save_outputs(res)
        print(
            f"{backend}: {len(res.cells)} cells in {wall:.1f} s "
            f"(load avg {os.getloadavg()[0]:.1f})",
            flush=True,
        )
        runs[backend + "_wall"] = wall
        runs[backend + "_load"] = os.getloadavg()[0]
    a, b = runs["local"], runs["ray"]
    same = all(
        {k: getattr(x, k) for k in NUMBERS} == {k: getattr(y, k) for k in NUMBERS}
        for x, y in zip(a.cells, b.cells, strict=True)
    )
    print(f"same per-cell numbers under local and ray: {same}")
    settings = []
    for s in a.settings:
        per_seed = ", ".join(f"s{k}={v:.3f}" for k, v in s.seed_sensitivities)
        print(
            f"{s.name}: LR sensitivity {s.lr_sensitivity:.3f} "
            f"[{s.sensitivity_lo:.3f}-{s.sensitivity_hi:.3f}] over {len(s.seed_sensitivities)} "
            f"seeds ({per_seed}); best final loss {s.best_final_loss:.3f} at LR {s.best_lr:g}"
        )
        settings.append(s.to_dict())
    for c in a.comparisons:
        print(comparison_line(c))
    spread = max(
        (p.final_loss.hi - p.final_loss.lo for p in a.points if math.isfinite(p.final_loss.hi)),
        default=math.nan,
    )
    print(f"largest seed spread of final loss at one (setting, LR): {spread:.3f}")
    doc = {
        "grid": {
            "settings": [s.name for s in a.settings],
            "lrs": list(a.lrs),
            "seeds": list(a.seeds),
            "steps": args.steps,
            "cpus": args.cpus,
        },
        "wall_s": {"local": runs["local_wall"], "ray": runs["ray_wall"]},
        "load_avg_1min_at_end": {"local": runs["local_load"], "ray": runs["ray_load"]},
        "same_numbers": same,
        "settings": settings,
        "comparisons": [c.to_dict() for c in a.comparisons],
        "max_seed_spread_final_loss": spread,
    }
    (args.out / "backends.json").write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
