"""Costs of the live guard: callback overhead per training step, and `watch` poll cost vs run length.

    python benchmarks/bench_live.py overhead [--steps 300] [--rounds 5]
    python benchmarks/bench_live.py watch [--sizes 10000 100000 1000000]
    python benchmarks/bench_live.py latency [--intervals 0.5 2] [--repeats 3]
    python benchmarks/bench_live.py monitor [--calls 20000]

overhead: a tiny HF Trainer run (1-layer GPT-2, 32 wide) and a tiny Lightning run (bigram
model) on one CPU thread, with and without StabdiagCallback, rounds alternating the order so
drift in a shared machine's load hits both alike. Step time = median interval between
consecutive step-end hooks (setup excluded), in CPU time of the training thread (wall time is
mostly the neighbours' load on a shared machine; --wall for wall time). Also the callback's own time per step (its hooks
timed directly), which is the noise-free number; logging every step is the worst case.

watch: a CSV of N steps already written, then 100 more lines appended per poll: the poll's wall
time (read + parse + append + spike screen) and, separately, what one full detector pass over
the run costs (the budgeted part), for N in --sizes.

latency: seconds from a spike's line being written to `stabdiag watch` exiting 1.

monitor: stabdiag.live.Monitor.log per call in a plain loop (floats in, default schedule).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "live"))

# CPU time of this thread (torch runs ops in it with one thread): on a shared, overloaded machine
# wall time mostly measures the neighbours. --wall switches to wall time.
CLOCK = time.thread_time
RESULTS = Path(__file__).resolve().parent / "results" / "live.json"


def _timed(cb, hooks):
    """Wrap ``hooks`` of callback ``cb`` so that their total run time accumulates in cb._self."""
    cb._self = 0.0
    for name in hooks:
        fn = getattr(cb, name)

        def wrap(*a, _fn=fn, **k):
            t = CLOCK()
            try:
                return _fn(*a, **k)
            finally:
                cb._self += CLOCK() - t

        setattr(cb, name, wrap)
    return cb


def _hf_run(steps: int, with_cb: bool, every: int = 1) -> tuple[float, float]:
    from live_util import BATCH, StepData, tiny_gpt2
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from stabdiag.integrations.hf import StabdiagCallback

    stamps: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            stamps.append(CLOCK())

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            max_steps=steps,
            per_device_train_batch_size=BATCH,
            learning_rate=3e-3,
            logging_steps=every,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
            seed=0,
        )
        cbs = [StepTimer()]
        cb = None
        if with_cb:
            cb = _timed(StabdiagCallback(findings_dir=out), ["on_log", "on_train_begin"])
            cbs.append(cb)
        Trainer(model=tiny_gpt2(), args=args, train_dataset=StepData(steps), callbacks=cbs).train()
    d = [b - a for a, b in zip(stamps[10:], stamps[11:], strict=False)]
    return statistics.median(d), (cb._self / steps if cb else 0.0)


def _pl_run(steps: int, with_cb: bool, every: int = 1) -> tuple[float, float]:
    import lightning.pytorch as pl
    import torch
    from live_util import Bigram, batch

    from stabdiag.integrations.lightning import StabdiagCallback

    stamps: list[float] = []

    class StepTimer(pl.Callback):
        def on_train_batch_end(self, *a, **k):
            stamps.append(CLOCK())

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = Bigram()

        def training_step(self, x, i):
            loss = self.net(x)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=3e-2)

    data = [batch(k) for k in range(steps)]
    loader = torch.utils.data.DataLoader(data, batch_size=None, shuffle=False)
    cbs = [StepTimer()]
    cb = None
    with tempfile.TemporaryDirectory() as out:
        if with_cb:
            cb = _timed(StabdiagCallback(findings_dir=out), ["on_train_batch_end"])
            cbs.append(cb)
        pl.Trainer(
            max_steps=steps,
            accelerator="cpu",
            devices=1,
            callbacks=cbs,
            default_root_dir=out,
            log_every_n_steps=every,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            logger=pl.loggers.CSVLogger(out),
        ).fit(Module(), loader)
    d = [b - a for a, b in zip(stamps[10:], stamps[11:], strict=False)]
    return statistics.median(d), (cb._self / steps if cb else 0.0)


def overhead(steps: int, rounds: int, every: int = 1) -> dict:
    import torch

    torch.set_num_threads(1)
    out = {}
    for name, fn in (("hf_trainer", _hf_run), ("lightning", _pl_run)):
        fn(20, True)  # warm imports
        base, withc, selfs = [], [], []
        for r in range(rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            for w in order:
                step, own = fn(steps, w, every)
                (withc if w else base).append(step)
                if w:
                    selfs.append(own)
        b, c, s = statistics.median(base), statistics.median(withc), statistics.median(selfs)
        out[name] = {
            "log_every": every,
            "steps": steps,
            "rounds": rounds,
            "step_ms_without": b * 1e3,
            "step_ms_with": c * 1e3,
            "paired_overhead_pct": (c / b - 1) * 100,
            "callback_ms_per_step": s * 1e3,
            "callback_pct_of_step": s / b * 100,
        }
        print(
            f"{name} (log every {every}): step {b * 1e3:.2f} ms without, {c * 1e3:.2f} ms with "
            f"({(c / b - 1) * 100:+.1f} % paired); callback itself {s * 1e6:.0f} us/step "
            f"= {s / b * 100:.2f} % of a step",
            flush=True,
        )
    return out


def watch(sizes: list[int]) -> dict:
    import numpy as np

    from stabdiag.live.watch import Watcher

    out = {}
    rng = np.random.default_rng(0)
    for n in sizes:
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "train.csv"

            def lines(a, b, n=n):
                s = np.arange(a, b)
                loss = 3 * np.exp(-s / (n / 3)) + 1 + 0.02 * rng.standard_normal(len(s))
                gn = 1 + 0.1 * rng.standard_normal(len(s))
                return "".join(
                    f"{i},{x:.6f},{g:.5f},0.0003\n" for i, x, g in zip(s, loss, gn, strict=True)
                )

            p.write_text("step,loss,grad_norm,lr\n" + lines(0, n))
            w = Watcher([p], budget=1e-9)  # the schedule never fires: only reading is timed
            t = time.perf_counter()
            w.poll()
            first = time.perf_counter() - t
            polls = []
            pos = n
            for _ in range(20):
                with open(p, "a") as fh:
                    fh.write(lines(pos, pos + 100))
                pos += 100
                t = time.perf_counter()
                w.poll()
                polls.append(time.perf_counter() - t)
            (run,) = w.runs.values()
            t = time.perf_counter()
            w.tracker.update([run.run_data()])
            full = time.perf_counter() - t
            w.close()
        out[str(n)] = {
            "backlog_read_s": first,
            "poll_100_lines_ms": statistics.median(polls) * 1e3,
            "full_check_s": full,
        }
        print(
            f"N={n:>9,}: first poll (backlog) {first:.2f} s; poll of 100 new lines "
            f"{statistics.median(polls) * 1e3:.1f} ms (median of 20); one full detector pass "
            f"{full * 1e3:.0f} ms",
            flush=True,
        )
    return out


def latency(intervals: list[float], repeats: int) -> dict:
    """`stabdiag watch --fail-on warning` on a CSV written at ~100 lines/s with a spike: seconds
    from the spike's line being complete in the file to the watch process exiting 1."""
    import subprocess

    from watch_util import Writer, csv_text, spike_offset

    data = csv_text()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "STABDIAG_NO_CACHE": "1"}
    out = {}
    for iv in intervals:
        got = []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as d:
                p = Path(d) / "train.csv"
                p.write_bytes(b"")
                cmd = [
                    sys.executable,
                    "-m",
                    "stabdiag",
                    "watch",
                    str(p),
                    "--interval",
                    str(iv),
                    "--fail-on",
                    "warning",
                    "--select",
                    "loss-spike",
                    "--idle-timeout",
                    "60",
                ]
                proc = subprocess.Popen(
                    cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
                )
                time.sleep(4.0)  # started (imports) before the run begins
                w = Writer(p, data, mark=spike_offset(data, "csv"), pause=0.05)
                w.start()
                proc.communicate(timeout=120)
                done = time.monotonic()
                w.stop.set()
                assert proc.returncode == 1 and w.marked_at is not None
                got.append(done - w.marked_at)
        out[str(iv)] = {"median_s": statistics.median(got), "max_s": max(got), "runs": got}
        print(
            f"--interval {iv:g}: spike reported {statistics.median(got):.2f} s after it was "
            f"written (median of {repeats}, max {max(got):.2f} s)",
            flush=True,
        )
    return out


def monitor(calls: int) -> dict:
    import numpy as np

    from stabdiag.live import Monitor

    rng = np.random.default_rng(0)
    out = {}
    for noise in (0.02, 0.2):
        vals = 3 * np.exp(-np.arange(calls) / (calls / 3)) + 1 + noise * rng.standard_normal(calls)
        gns = 1 + 0.1 * rng.standard_normal(calls)
        for action in ("warn", "skip"):
            m = Monitor(action=action)
            t = time.perf_counter()
            for i in range(calls):
                m.log(i, loss=float(vals[i]), grad_norm=float(gns[i]), lr=3e-4)
            per = (time.perf_counter() - t) / calls
            key = f"noise{noise}_{action}"
            out[key] = {"us_per_call": per * 1e6, "checks": m.checks, "check_s": m.check_seconds}
            print(
                f"Monitor.log ({action}, loss noise {noise:.0%}): {per * 1e6:.0f} us/call over "
                f"{calls:,} calls, {m.checks} full checks ({m.check_seconds:.2f} s)",
                flush=True,
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="what", required=True)
    o = sub.add_parser("overhead")
    o.add_argument("--steps", type=int, default=300)
    o.add_argument("--rounds", type=int, default=5)
    o.add_argument("--log-every", type=int, default=1, help="logging interval of both trainers")
    o.add_argument("--wall", action="store_true", help="wall time instead of thread CPU time")
    w = sub.add_parser("watch")
    w.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    la = sub.add_parser("latency")
    la.add_argument("--intervals", type=float, nargs="+", default=[0.5, 2.0])
    la.add_argument("--repeats", type=int, default=3)
    m = sub.add_parser("monitor")
    m.add_argument("--calls", type=int, default=20_000)
    a = ap.parse_args()
    if getattr(a, "wall", False):
        global CLOCK
        CLOCK = time.perf_counter
    res = (
        overhead(a.steps, a.rounds, a.log_every)
        if a.what == "overhead"
        else watch(a.sizes)
        if a.what == "watch"
        else latency(a.intervals, a.repeats)
        if a.what == "latency"
        else monitor(a.calls)
    )
    data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    key = a.what if a.what != "overhead" else f"overhead_every{a.log_every}"
    data[key] = {
        "results": res,
        "load_avg": os.getloadavg()[0],
        "when": time.strftime("%Y-%m-%d %H:%M"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
