"""Helpers for detector tests: build RunData from arrays, load a few real logs minimally."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from stabdiag.table import GRAD_NORM, LR, TRAIN_LOSS, VAL_LOSS, RunData, Series

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "real_logs"


def make_run(name: str = "run", steps=None, by_rank=None, **metrics) -> RunData:
    """RunData from keyword arrays: make_run(loss=..., grad_norm=...) or canonical names via dict."""
    alias = {"loss": TRAIN_LOSS, "grad_norm": GRAD_NORM, "lr": LR, "val_loss": VAL_LOSS}
    series = {}
    for key, vals in metrics.items():
        if isinstance(vals, Series):
            series[alias.get(key, key)] = vals
            continue
        v = np.asarray(vals, dtype=np.float64)
        s = (
            np.arange(len(v), dtype=np.int64)
            if steps is None
            else np.asarray(steps, dtype=np.int64)
        )
        series[alias.get(key, key)] = Series(s, v)
    return RunData(name=name, series=series, by_rank=by_rank or {})


def ser(steps, values) -> Series:
    return Series(np.asarray(steps, dtype=np.int64), np.asarray(values, dtype=np.float64))


def decaying(
    n: int = 2000,
    seed: int = 0,
    a: float = 8.0,
    b: float = 0.3,
    c: float = 2.0,
    noise: float = 0.01,
) -> np.ndarray:
    """A healthy loss curve a*step^-b + c with multiplicative noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(1, n + 1, dtype=np.float64)
    return (a * t**-b + c) * (1 + noise * rng.standard_normal(n))


def real_path(*parts: str) -> Path:
    p = REAL.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real log {p} not available")
    return p


def _series(pairs: list[tuple[int, float]]) -> Series:
    d: dict[int, float] = {}
    for s, v in pairs:
        d[int(s)] = float(v)
    ks = sorted(d)
    return ser(ks, [d[k] for k in ks])


def load_trainer_state(folder: str) -> RunData:
    """Minimal HF trainer_state.json reader (loss, grad_norm, lr, eval_loss) for tests only."""
    data = json.loads(real_path(folder, "trainer_state.json").read_text())
    cols: dict[str, list] = {TRAIN_LOSS: [], GRAD_NORM: [], LR: [], VAL_LOSS: []}
    keys = {
        "loss": TRAIN_LOSS,
        "grad_norm": GRAD_NORM,
        "learning_rate": LR,
        "lr": LR,
        "eval_loss": VAL_LOSS,
    }
    for e in data["log_history"]:
        for k, m in keys.items():
            if k in e and isinstance(e[k], (int, float)):
                cols[m].append((e["step"], e[k]))
    return RunData(name=folder, series={m: _series(p) for m, p in cols.items() if p})


def load_llmc(name: str) -> RunData:
    """Minimal llm.c main.log reader: s:N trl:X lr:Y norm:Z and s:N tel:V."""
    cols: dict[str, list] = {TRAIN_LOSS: [], GRAD_NORM: [], LR: [], VAL_LOSS: []}
    keys = {"trl": TRAIN_LOSS, "norm": GRAD_NORM, "lr": LR, "tel": VAL_LOSS}
    for line in real_path("llmc_modded_nanogpt", name).read_text().splitlines():
        m = re.match(r"s:(\d+) (.*)", line)
        if not m:
            continue
        for kv in m.group(2).split():
            k, _, v = kv.partition(":")
            if k in keys:
                cols[keys[k]].append((int(m.group(1)), float(v)))
    return RunData(name=name, series={m: _series(p) for m, p in cols.items() if p})


def load_wandb_csv() -> RunData:
    path = real_path("wandb_export_csv", "dtu-400-target-loss.csv")
    with path.open() as fh:
        rows = list(csv.reader(fh))
    pairs = [(int(r[0]), float(r[1])) for r in rows[1:] if r and r[1]]
    return RunData(name="wandb_export_csv", series={TRAIN_LOSS: _series(pairs)})


def short_noisy_loss(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(steps, loss) of a short decaying log with gaps, up to three spikes of 1-3 points, and
    NaN, 0 and +Inf in about 5, 3 and 2 % of the points: what short-log rules must agree on."""
    steps = np.cumsum(rng.choice([1, 1, 1, 10, 100, 5000], size=n)).astype(np.int64)
    x = np.exp(1.0 + 0.05 * rng.standard_normal(n) - 0.01 * np.arange(n))
    for i in rng.integers(0, max(n, 1), size=int(rng.integers(0, 4))):
        if n:
            x[i : i + int(rng.integers(1, 4))] *= float(rng.choice([1.3, 2.0, 5.0, 30.0]))
    u = rng.random(n)
    x[u < 0.05] = np.nan
    x[(u >= 0.05) & (u < 0.08)] = 0.0
    x[(u >= 0.08) & (u < 0.1)] = np.inf
    return steps, x
