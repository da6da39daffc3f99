"""Regenerate the hand-made sample runs: ``python sample_runs/generate.py``.

Each sample is a small run with known events, written in the format a real tool writes, so that
``stabdiag analyze sample_runs/`` shows every reader and the main detectors at work. Curves are
drawn from a seeded generator: the same files every time.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
STEPS = 1000


def base_curve(rng: np.random.Generator, steps: np.ndarray, noise: float = 0.02) -> np.ndarray:
    """A healthy LM loss: fast fall then a slow power-law tail, with multiplicative noise."""
    clean = 2.0 + 3.5 * (1 + steps / 40.0) ** -0.7
    return clean * np.exp(rng.normal(0, noise, len(steps)))


def lr_schedule(steps: np.ndarray, peak: float = 3e-4, warmup: int = 50) -> np.ndarray:
    warm = peak * np.minimum(1.0, (steps + 1) / warmup)
    prog = np.clip((steps - warmup) / max(steps[-1] - warmup, 1), 0, 1)
    return np.where(steps < warmup, warm, 0.1 * peak + 0.45 * peak * (1 + np.cos(math.pi * prog)))


def grad_curve(rng: np.random.Generator, steps: np.ndarray) -> np.ndarray:
    return (0.4 + 1.6 * np.exp(-steps / 80.0)) * np.exp(rng.normal(0, 0.1, len(steps)))


def clean_tensorboard(rng: np.random.Generator) -> None:
    """A healthy run as torch's SummaryWriter writes it (HF Trainer tag names, simple_value)."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    out = HERE / "clean_tensorboard"
    for old in out.glob("events.out.tfevents.*"):
        old.unlink()
    steps = np.arange(0, STEPS, 5)
    loss, gn, lr = base_curve(rng, steps), grad_curve(rng, steps), lr_schedule(steps)
    w = EventFileWriter(str(out), filename_suffix=".sample")
    for i, s in enumerate(steps):
        t = 1_700_000_000.0 + float(s)
        vals = [Summary.Value(tag="train/loss", simple_value=float(loss[i])),
                Summary.Value(tag="train/grad_norm", simple_value=float(gn[i])),
                Summary.Value(tag="train/learning_rate", simple_value=float(lr[i]))]
        w.add_event(Event(wall_time=t, step=int(s), summary=Summary(value=vals)))
    w.close()
    # The writer names files with the host and pid: give the sample a stable name.
    files = sorted(out.glob("events.out.tfevents.*"))
    files[-1].rename(out / "events.out.tfevents.1700000000.sample-host.1.0")


def loss_spike_csv(rng: np.random.Generator) -> None:
    """Wide CSV (a custom loop's log): a transient 4x loss spike at step 600 with a grad-norm spike."""
    steps = np.arange(STEPS)
    loss, gn, lr = base_curve(rng, steps), grad_curve(rng, steps), lr_schedule(steps)
    loss[600:603] *= [4.0, 2.2, 1.3]
    gn[600] *= 25.0
    lines = ["step,loss,grad_norm,lr"]
    lines += [f"{s},{loss[i]:.5f},{gn[i]:.5f},{lr[i]:.3e}" for i, s in enumerate(steps)]
    (HERE / "loss_spike.csv").write_text("\n".join(lines) + "\n")


def grad_explosion_jsonl(rng: np.random.Generator) -> None:
    """JSONL (one object per step): grad norm grows exponentially from step 700, the loss follows."""
    steps = np.arange(STEPS)
    loss, gn, lr = base_curve(rng, steps), grad_curve(rng, steps), lr_schedule(steps, peak=3e-3, warmup=1)
    grow = np.where(steps >= 700, np.exp((steps - 700) / 25.0), 1.0)
    gn = gn * grow
    loss = np.where(steps >= 760, loss * (1 + 0.05 * np.log(grow)), loss)
    with (HERE / "grad_explosion.jsonl").open("w") as fh:
        for i, s in enumerate(steps):
            rec = {"step": int(s), "loss": round(float(loss[i]), 5),
                   "grad_norm": float(f"{gn[i]:.5g}"), "lr": float(f"{lr[i]:.3e}")}
            fh.write(json.dumps(rec) + "\n")


def fp16_overflow_csv(rng: np.random.Generator) -> None:
    """Long CSV (step,metric,value): fp16 with a benign start-up scale search, then from step 600 the
    scale keeps halving down to 1 with skipped steps: a real overflow cascade."""
    steps = np.arange(STEPS)
    loss = base_curve(rng, steps)
    scale = np.full(STEPS, 2.0**16)
    skipped = np.zeros(STEPS)
    s = 2.0**16
    for i in steps:
        if i in (1, 2, 3, 4) or i >= 600 and i % 8 == 0 and s > 1:  # start-up search: 2^16 -> 2^12
            s /= 2
            skipped[i] = 1
        scale[i] = s
    loss[600:] *= np.linspace(1.0, 1.6, STEPS - 600)
    rows = ["step,metric,value"]
    for i in steps:
        rows.append(f"{i},loss,{loss[i]:.5f}")
        rows.append(f"{i},loss_scale,{scale[i]:g}")
        rows.append(f"{i},skipped_step,{skipped[i]:g}")
    (HERE / "fp16_overflow.csv").write_text("\n".join(rows) + "\n")


def divergence_hf(rng: np.random.Generator) -> None:
    """HF Trainer output dir: loss climbs from step 500 and never comes back, grad norm turns NaN."""
    out = HERE / "divergence_hf"
    out.mkdir(exist_ok=True)
    steps = np.arange(10, STEPS + 1, 10)
    loss, gn, lr = base_curve(rng, steps), grad_curve(rng, steps), lr_schedule(steps, peak=1e-3)
    rise = np.where(steps >= 500, np.exp((steps - 500) / 150.0), 1.0)
    loss = loss * rise
    gn = gn * rise**2
    hist: list[dict[str, object]] = []
    for i, s in enumerate(steps):
        g = float("nan") if s >= 950 else round(float(gn[i]), 4)
        hist.append({"epoch": round(float(s) / STEPS, 4), "grad_norm": g,
                     "learning_rate": float(lr[i]), "loss": round(float(loss[i]), 4), "step": int(s)})
        if s % 250 == 0:
            hist.append({"epoch": round(float(s) / STEPS, 4), "eval_loss": round(float(loss[i]) * 1.05, 4),
                         "step": int(s)})
    state = {"global_step": int(steps[-1]), "max_steps": int(steps[-1]), "logging_steps": 10,
             "log_history": hist}
    # Python's json writes NaN as a bare token, exactly like the HF Trainer does.
    (out / "trainer_state.json").write_text(json.dumps(state, indent=2, sort_keys=True))


def main() -> None:
    rng = np.random.default_rng(20261122)
    clean_tensorboard(rng)
    loss_spike_csv(rng)
    grad_explosion_jsonl(rng)
    fp16_overflow_csv(rng)
    divergence_hf(rng)


if __name__ == "__main__":
    main()
