"""Trainer speed on CPU: the attention probe's cost, thread choice, and resume vs uninterrupted.

    python benchmarks/bench_train.py probe   [--steps 40] [--rounds 3]
    python benchmarks/bench_train.py threads [--steps 60]
    python benchmarks/bench_train.py resume  [--steps 200] [--cut 100] [--code DIR]

`probe`: the instrumented step with the fp32 batch-wide attention probe vs the same loop with
the probe replaced by a constant, rounds alternating in one process (same model, same batches).
`threads`: `stabdiag train --preset tiny` in a fresh process with the trainer's own thread
choice, and with `--set threads=N` for each N up to the core count (s/step and wall time).
`resume`: a fresh process trains `steps` steps; another trains, is stopped with SIGINT after
`cut`, and a third resumes it; s/step (median of per-step wall-time gaps from metrics.csv) of the
uninterrupted run vs the resumed part, over the same steps. `--code DIR` runs another checkout
(PYTHONPATH=DIR) to measure before a fix. Subprocesses get no OMP_NUM_THREADS: what a user gets.
Numbers on a shared machine drift with its load; the load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SMALL = ["--set", "eval_interval=1000", "--set", "tensorboard=false", "--set", "log_interval=10"]


def _load() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def bench_probe(steps: int, rounds: int) -> None:
    import torch

    from stabdiag.train import model as model_mod
    from stabdiag.train.config import resolve
    from stabdiag.train.data import load_corpus
    from stabdiag.train.dist import DistInfo
    from stabdiag.train.loop import _Loop, build_optimizer
    from stabdiag.train.model import GPT
    from stabdiag.train.writers import NullWriter

    torch.set_num_threads(1)
    cfg = resolve("tiny", "stable")
    corpus = load_corpus(cfg.data, cfg.data_max_bytes, cfg.seed)
    torch.manual_seed(0)
    model = GPT(cfg)
    loop = _Loop(
        cfg,
        DistInfo(),
        torch.device("cpu"),
        corpus,
        model,
        model,
        build_optimizer(model, cfg, torch.device("cpu")),
        torch.amp.GradScaler("cpu", enabled=False),
        (),
        NullWriter(),
        None,
        None,
    )
    real = model_mod.max_logit

    def none(q, k, d_head):
        return torch.zeros(q.shape[1], device=q.device)

    # CPU time of this (one-threaded) process: on a shared machine wall time mostly measures
    # the neighbours; both are printed.
    times: dict[str, list[tuple[float, float]]] = {"probe": [], "none": []}
    step = 0
    for _ in range(rounds):
        for name, fn in (("probe", real), ("none", none)):
            model_mod.max_logit = fn
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                loop.buffer.append(loop.train_step(step))
                step += 1
            loop.buffer.clear()
            loop.host.clear()
            times[name].append(
                ((time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps)
            )
    model_mod.max_logit = real
    for i, what in ((1, "CPU"), (0, "wall")):
        p = statistics.median(t[i] for t in times["probe"])
        n = statistics.median(t[i] for t in times["none"])
        print(
            f"tiny, 1 thread, {rounds}x{steps} steps each, {what}: probe {1e3 * p:.1f} ms/step, "
            f"none {1e3 * n:.1f} ms/step, probe cost {1e3 * (p - n):.2f} ms "
            f"({100 * (p / n - 1):.1f}%)  [load {_load()}]"
        )


def _train(
    out: Path,
    name: str,
    steps: int,
    extra: list[str],
    code: str | None,
    stop_after: int | None = None,
    resume: bool = False,
) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if code:
        env["PYTHONPATH"] = code
    cmd = [
        sys.executable,
        "-m",
        "stabdiag",
        "train",
        "--preset",
        "tiny",
        "--steps",
        str(steps),
        *SMALL,
        *extra,
        "--out",
        str(out),
        "--name",
        name,
        "--no-analyze",
        *(["--resume"] if resume else []),
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    if stop_after is not None:
        metrics = out / name / "metrics.csv"
        while proc.poll() is None:
            if metrics.exists() and _last_step(metrics) >= stop_after:
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.05)
    _, err = proc.communicate()
    if proc.returncode not in (0, 130):
        raise SystemExit(f"train failed ({proc.returncode}): {err[-2000:]}")
    return time.perf_counter() - t0


def _last_step(metrics: Path) -> int:
    lines = metrics.read_text().splitlines()
    for line in reversed(lines[1:]):
        try:
            return int(line.split(",", 1)[0])
        except ValueError:
            continue
    return -1


def _s_per_step(metrics: Path, lo: int, hi: int) -> float:
    import pandas as pd

    f = pd.read_csv(metrics)
    wall = f[f["metric"] == "train/loss"].drop_duplicates("step", keep="last")
    wall = wall.set_index("step")["wall_time"].sort_index()
    return float(wall.diff().loc[lo:hi].median())


def bench_threads(steps: int) -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for label, extra in [
            ("chosen", []),
            *[(f"threads={n}", ["--set", f"threads={n}"]) for n in range(1, (cores or 1) + 1)],
        ]:
            wall = _train(out, label, steps, extra, None)
            print(
                f"tiny {steps} steps, {label}: {_s_per_step(out / label / 'metrics.csv', 10, steps):.4f} "
                f"s/step, {wall:.1f} s wall  [load {_load()}]"
            )
        wall = _train(out, "full", 300, ["--set", "eval_interval=50"], None)
        print(
            f"tiny preset, 300 steps with evals, chosen threads: {wall:.1f} s wall  [load {_load()}]"
        )


def bench_resume(steps: int, cut: int, code: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        _train(out, "full", steps, [], code)
        _train(out, "cut", steps, [], code, stop_after=cut)
        done = _last_step(out / "cut" / "metrics.csv")
        _train(out, "cut", steps, [], code, resume=True)
        lo = done + 10
        full = _s_per_step(out / "full" / "metrics.csv", lo, steps)
        resumed = _s_per_step(out / "cut" / "metrics.csv", lo, steps)
        before = _s_per_step(out / "cut" / "metrics.csv", 10, cut)
        print(
            f"{'code ' + code if code else 'this checkout'}: steps {lo}-{steps - 1}: uninterrupted "
            f"{full:.4f} s/step, resumed {resumed:.4f} s/step (x{resumed / full:.2f}); "
            f"the cut run before its stop {before:.4f} s/step  [load {_load()}]"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["probe", "threads", "resume"])
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cut", type=int, default=100)
    ap.add_argument("--code", default=None)
    a = ap.parse_args()
    if a.what == "probe":
        bench_probe(a.steps or 40, a.rounds)
    elif a.what == "threads":
        bench_threads(a.steps or 60)
    else:
        bench_resume(a.steps or 200, a.cut, a.code)


if __name__ == "__main__":
    main()
