"""Regenerate the sample runs: ``python sample_runs/generate.py`` (about 80 s of CPU time on one core).

Every sample is a real ``stabdiag train`` run of the ``tiny`` preset on the built-in corpus
(``data=stdlib``: this interpreter's standard-library source, no download), seeded, on one CPU
thread, with a known event: a recipe, a stabilizer setting or an injected fault (``inject=...``, recorded in the
run's ``run.json``). One sample is the trainer's run directory as written (TensorBoard events +
``metrics.csv`` + ``config.json`` + ``run.json``; the checkpoint is left out); the others export the
trainer's ``metrics.csv`` into the formats other tools write (wide CSV, JSONL, HF Trainer
``trainer_state.json``, long CSV), keeping a subset of the metrics, so ``stabdiag analyze
sample_runs/`` shows every reader at work and the whole folder stays a few hundred KB.

Same Python and torch versions on one CPU thread, same numbers (wall times and tokens/s differ;
another thread count changes the last digits; the corpus hash is in each run's
``run.json`` where kept). The committed files were made with Python 3.11.7 and torch 2.13 (CPU).
``data=synthetic`` would give the same bytes everywhere, but the tiny stable recipe has a real
loss spike at the end of warm-up on it, so ``clean`` would not be clean. README.md lists what each
sample must produce.
Needs the ``train`` extra (torch).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMMON = ("data=stdlib", "seed=0", "device=cpu")

# name -> (recipe, overrides, exporter). Overrides follow the `tiny` preset (300 steps, 2 layers).
SAMPLES: dict[str, tuple[str, tuple[str, ...], str]] = {
    # Healthy: pre-LN, warm-up, cosine decay, clipping. HF Trainer's trainer_state.json.
    "clean_hf": ("stable", (), "hf"),
    # One batch of uniformly random bytes at step 150: the loss jumps and comes straight back.
    "loss_spike": ("stable", ("inject=bad_batch@150",), "wide_csv"),
    # The LR is multiplied by 100 for 10 steps from step 150 (0.0017 -> 0.17): the loss jumps and
    # never fully recovers.
    "lr_spike": ("stable", ("inject=lr_spike@150:factor=100,steps=10",), "jsonl"),
    # A healthy fp16 run hit by six gradient blow-ups (x1e8, steps 100-105): the loss scaler skips
    # them and the scale halves six times (65536 -> 1024).
    "fp16_overflow": (
        "stable",
        (
            "precision=fp16",
            "steps=150",
            *(f"inject=grad_scale@{s}:factor=1e8" for s in range(100, 106)),
        ),
        "long_csv",
    ),
    # LR 0.1 (30x the stable recipe) without QK-norm: the loss looks fine, the max attention logit
    # grows past 1000 and is still rising at the end. (qk_norm=true keeps it below ~20.)
    "attn_logit_growth": ("stable", ("lr=0.1", "steps=150"), "jsonl_attn"),
    # The unstable recipe: post-LN, LR 0.3 without warm-up or clipping, fp16. The trainer's own run
    # directory as written; it stops itself once the loss has been NaN for 20 steps.
    "unstable": ("unstable", (), "run_dir"),
}


def main() -> None:
    import torch

    from stabdiag.train import resolve, train

    torch.set_num_threads(1)
    names = sys.argv[1:] or list(SAMPLES)
    unknown = set(names) - set(SAMPLES)
    if unknown:
        raise SystemExit(
            f"unknown sample(s) {', '.join(sorted(unknown))}; known: {', '.join(SAMPLES)}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            recipe, overrides, exporter = SAMPLES[name]
            cfg = resolve(
                "tiny",
                recipe,
                overrides=[*COMMON, *overrides, f"out_dir={tmp}", f"run_name={name}"],
            )
            result = train(cfg)
            for old in HERE.glob(f"{name}.*"):
                old.unlink()
            if (HERE / name).is_dir():
                shutil.rmtree(HERE / name)
            EXPORTERS[exporter](result.run_dir, name)
            print(
                f"{name}: {result.steps_done} steps, {result.stop_reason}, "
                f"final loss {result.final_loss:.3f}",
                file=sys.stderr,
            )


# ----------------------------------------------------------------------------- reading metrics.csv


def read_metrics(run_dir: Path) -> dict[int, dict[str, float]]:
    """The trainer's long metrics.csv as {step: {metric: value}} (later rows win)."""
    rows: dict[int, dict[str, float]] = {}
    with open(run_dir / "metrics.csv", newline="") as fh:
        for rec in csv.DictReader(fh):
            rows.setdefault(int(rec["step"]), {})[rec["metric"]] = float(rec["value"])
    return dict(sorted(rows.items()))


def num(x: float, digits: int = 6) -> float:
    """Round to a few significant digits (keeps files small; non-finite values pass through)."""
    return float(f"{x:.{digits}g}") if math.isfinite(x) else x


def text(x: float) -> str:
    return (
        f"{num(x):g}"
        if math.isfinite(x)
        else ("nan" if math.isnan(x) else ("inf" if x > 0 else "-inf"))
    )


# ----------------------------------------------------------------------------- exporters


def export_run_dir(run_dir: Path, name: str) -> None:
    """The trainer's run directory as written, less the checkpoint; stable event-file name."""
    out = HERE / name
    out.mkdir()
    for f in ("metrics.csv", "config.json", "run.json"):
        shutil.copy2(run_dir / f, out / f)
    config = json.loads((out / "config.json").read_text())
    config["out_dir"] = "runs"  # not the temporary directory it was trained in
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    events = sorted(run_dir.glob("events.out.tfevents.*"))
    assert len(events) == 1, events
    shutil.copy2(events[0], out / "events.out.tfevents.1700000000.stabdiag-sample.0")


def export_wide_csv(run_dir: Path, name: str) -> None:
    """A custom loop's CSV log: one row per step, one column per metric."""
    cols = {"loss": "train/loss", "grad_norm": "train/grad_norm", "lr": "train/lr"}
    lines = ["step," + ",".join(cols)]
    for step, m in read_metrics(run_dir).items():
        lines.append(f"{step}," + ",".join(text(m[c]) for c in cols.values()))
    (HERE / f"{name}.csv").write_text("\n".join(lines) + "\n")


def _jsonl(run_dir: Path, name: str, cols: dict[str, str]) -> None:
    with open(HERE / f"{name}.jsonl", "w") as fh:
        for step, m in read_metrics(run_dir).items():
            rec: dict[str, object] = {"step": step}
            rec.update({k: num(m[c]) for k, c in cols.items() if c in m})
            fh.write(json.dumps(rec) + "\n")


def export_jsonl(run_dir: Path, name: str) -> None:
    """One JSON object per step (a custom loop's log), validation loss where it was measured."""
    _jsonl(
        run_dir,
        name,
        {
            "loss": "train/loss",
            "grad_norm": "train/grad_norm",
            "lr": "train/lr",
            "val_loss": "val/loss",
        },
    )


def export_jsonl_attn(run_dir: Path, name: str) -> None:
    """JSONL that also logs the max attention logit (Megatron's log_max_attention_logit)."""
    _jsonl(
        run_dir,
        name,
        {
            "loss": "train/loss",
            "grad_norm": "train/grad_norm",
            "lr": "train/lr",
            "max_attn_logit": "train/max_attn_logit",
            "val_loss": "val/loss",
        },
    )


def export_hf(run_dir: Path, name: str) -> None:
    """An HF Trainer output dir: trainer_state.json with logging_steps=1 and eval every 50 steps."""
    out = HERE / name
    out.mkdir()
    metrics = read_metrics(run_dir)
    last = max(metrics)
    hist: list[dict[str, object]] = []
    for step, m in metrics.items():
        hf_step = step + 1  # HF counts optimizer steps from 1
        epoch = round(hf_step / (last + 1), 4)
        hist.append(
            {
                "epoch": epoch,
                "grad_norm": num(m["train/grad_norm"]),
                "learning_rate": num(m["train/lr"]),
                "loss": num(m["train/loss"]),
                "step": hf_step,
            }
        )
        if "val/loss" in m:
            hist.append({"epoch": epoch, "eval_loss": num(m["val/loss"]), "step": hf_step})
    state = {
        "global_step": last + 1,
        "max_steps": last + 1,
        "logging_steps": 1,
        "eval_steps": 50,
        "log_history": hist,
    }
    (out / "trainer_state.json").write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")


def export_long_csv(run_dir: Path, name: str) -> None:
    """A long (tidy) CSV, step,metric,value, with plain metric names (loss, loss_scale, ...)."""
    cols = {
        "loss": "train/loss",
        "grad_norm": "train/grad_norm",
        "lr": "train/lr",
        "loss_scale": "train/loss_scale",
        "skipped_step": "train/skipped_step",
    }
    lines = ["step,metric,value"]
    for step, m in read_metrics(run_dir).items():
        lines += [f"{step},{k},{text(m[c])}" for k, c in cols.items() if c in m]
    (HERE / f"{name}.csv").write_text("\n".join(lines) + "\n")


EXPORTERS: dict[str, Callable[[Path, str], None]] = {
    "run_dir": export_run_dir,
    "wide_csv": export_wide_csv,
    "jsonl": export_jsonl,
    "jsonl_attn": export_jsonl_attn,
    "hf": export_hf,
    "long_csv": export_long_csv,
}

if __name__ == "__main__":
    main()
