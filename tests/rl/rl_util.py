"""Writer-shaped RL fixtures built by code: TRL trainer_state.json, verl console and JSONL logs.

The key names, their order and the value formats follow what the writers emit (TRL 1.16
GRPOTrainer/RLOOTrainer/DPOTrainer ``_metrics`` logged through the HF Trainer's ``log_history``,
written by ``json.dump`` with bare NaN/Infinity; verl's ``concat_dict_to_str`` console lines and its
file logger's ``{"step": N, "data": {...}}`` lines). The curves are shaped per scenario.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from stabdiag.diagnose import diagnose
from stabdiag.findings import Severity
from stabdiag.report import Report

GRPO_KEYS = (
    "loss",
    "grad_norm",
    "learning_rate",
    "num_tokens",
    "completions/mean_length",
    "completions/min_length",
    "completions/max_length",
    "completions/clipped_ratio",
    "completions/mean_terminated_length",
    "completions/min_terminated_length",
    "completions/max_terminated_length",
    "rewards/{fn}/mean",
    "rewards/{fn}/std",
    "reward",
    "reward_std",
    "frac_reward_zero_std",
    "kl",
    "entropy",
    "clip_ratio/low_mean",
    "clip_ratio/high_mean",
    "clip_ratio/region_mean",
    "clip_ratio/low_min",
    "clip_ratio/high_max",
    "step_time",
)


def grpo_curves(n: int = 150, seed: int = 0, cap: int = 48) -> dict[str, np.ndarray]:
    """A healthy GRPO run: reward rises and saturates, KL grows to ~0.05, entropy loses ~15 %,
    on-policy (clip fractions 0), lengths stable below the cap, a few degenerate groups."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64)
    reward = 0.2 + 0.5 * (1 - np.exp(-t / 40)) + 0.04 * rng.standard_normal(n)
    length = 22 + 2 * rng.standard_normal(n)
    return {
        "loss": 0.03 * rng.standard_normal(n) - 0.02 * np.exp(-t / 30),
        "grad_norm": 0.3 + 0.05 * rng.standard_normal(n) ** 2,
        "learning_rate": np.full(n, 5e-4),
        "num_tokens": np.cumsum(np.full(n, 1000.0)),
        "completions/mean_length": length,
        "completions/min_length": np.maximum(1, length - 18),
        "completions/max_length": np.minimum(cap, length + 20),
        "completions/clipped_ratio": np.clip(0.05 + 0.02 * rng.standard_normal(n), 0, 1),
        "completions/mean_terminated_length": length - 1,
        "completions/min_terminated_length": np.maximum(1, length - 18),
        "completions/max_terminated_length": np.minimum(cap, length + 18),
        "rewards/{fn}/mean": reward,
        "rewards/{fn}/std": np.abs(0.25 + 0.03 * rng.standard_normal(n)),
        "reward": reward,
        "reward_std": np.abs(0.25 + 0.03 * rng.standard_normal(n)),
        "frac_reward_zero_std": np.clip(0.1 + 0.05 * rng.standard_normal(n), 0, 1),
        "kl": np.concatenate(
            [[0.0], 0.05 * (1 - np.exp(-t[1:] / 50)) * np.exp(0.1 * rng.standard_normal(n - 1))]
        ),
        "entropy": 3.5 * (1 - 0.15 * t / n) + 0.01 * rng.standard_normal(n),
        "clip_ratio/low_mean": np.zeros(n),
        "clip_ratio/high_mean": np.zeros(n),
        "clip_ratio/region_mean": np.zeros(n),
        "clip_ratio/low_min": np.zeros(n),
        "clip_ratio/high_max": np.zeros(n),
        "step_time": 0.6 + 0.05 * rng.random(n),
    }


def trl_entries(
    curves: Mapping[str, np.ndarray],
    fn: str = "r_frac_a",
    drop: tuple[str, ...] = (),
    every: int = 1,
) -> list[dict]:
    """log_history entries in TRL's key order (missing curves are simply not logged)."""
    n = len(next(iter(curves.values())))
    out = []
    for i in range(0, n, every):
        e: dict = {}
        for key in GRPO_KEYS:
            if key in curves and key not in drop:
                e[key.format(fn=fn)] = float(curves[key][i])
        for key, v in curves.items():  # keys outside GRPO's order (DPO, PPO, eval twins)
            if key not in GRPO_KEYS and key not in drop:
                e[key] = float(v[i])
        e["epoch"] = round((i + 1) / n, 4)
        e["step"] = i + 1
        out.append(e)
    return out


def write_trainer_state(d: Path, entries: list[dict], summary: bool = True) -> Path:
    """``trainer_state.json`` as ``Trainer.save_state`` writes it (json.dumps: bare NaN/Infinity)."""
    d.mkdir(parents=True, exist_ok=True)
    hist = list(entries)
    last = hist[-1]["step"] if hist else 0
    if summary and hist:
        hist.append(
            {
                "epoch": 1.0,
                "step": last,
                "total_flos": 0.0,
                "train_loss": 0.01,
                "train_runtime": 90.0,
                "train_samples_per_second": 50.0,
                "train_steps_per_second": 1.5,
            }
        )
    state = {
        "best_global_step": None,
        "best_metric": None,
        "best_model_checkpoint": None,
        "epoch": 1.0,
        "eval_steps": 500,
        "global_step": last,
        "is_hyper_param_search": False,
        "is_local_process_zero": True,
        "is_world_process_zero": True,
        "log_history": hist,
        "logging_steps": 1,
        "max_steps": last,
        "num_input_tokens_seen": 0,
        "num_train_epochs": 1,
        "save_steps": 500,
        "stateful_callbacks": {},
        "total_flos": 0.0,
        "train_batch_size": 32,
        "trial_name": None,
        "trial_params": None,
    }
    p = d / "trainer_state.json"
    p.write_text(json.dumps(state, indent=2, sort_keys=True))
    return p


def grpo_run(
    d: Path,
    edit: Callable[[dict[str, np.ndarray]], None] | None = None,
    n: int = 150,
    drop: tuple[str, ...] = (),
    seed: int = 0,
) -> Path:
    c = grpo_curves(n, seed)
    if edit is not None:
        edit(c)
    return write_trainer_state(d, trl_entries(c, drop=drop))


def dpo_run(d: Path, overfit: bool, n: int = 120, with_eval: bool = True, seed: int = 0) -> Path:
    """TRL DPOTrainer log_history: train entries every step, eval entries every 4 steps."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64)
    if overfit:
        acc = np.minimum(1.0, 0.5 + t / 30)
        margin = 0.05 + 0.08 * t
        eval_loss = 0.69 - 0.05 * np.minimum(t, 20) / 20 + 0.012 * np.maximum(t - 20, 0)
        eval_acc = np.minimum(0.7, 0.5 + t / 100) - 0.004 * np.maximum(t - 20, 0)
    else:
        acc = np.minimum(0.85, 0.5 + t / 200) + 0.03 * rng.standard_normal(n)
        margin = 0.05 + 0.004 * t
        eval_loss = 0.69 - 0.1 * (1 - np.exp(-t / 40)) + 0.003 * rng.standard_normal(n)
        eval_acc = 0.5 + 0.2 * (1 - np.exp(-t / 40))
    loss = np.log1p(np.exp(-margin)) + 0.01 * rng.random(n)
    hist = []
    for i in range(n):
        hist.append(
            {
                "epoch": i / n,
                "grad_norm": 1.0,
                "learning_rate": 1e-3,
                "logits/chosen": -1.0,
                "logits/rejected": -1.0,
                "logps/chosen": -30 - 0.2 * t[i],
                "logps/rejected": -30 - 0.5 * t[i],
                "loss": float(loss[i]),
                "rewards/accuracies": float(acc[i]),
                "rewards/chosen": float(margin[i] / 2),
                "rewards/margins": float(margin[i]),
                "rewards/rejected": float(-margin[i] / 2),
                "step": i + 1,
            }
        )
        if with_eval and (i + 1) % 4 == 0:
            hist.append(
                {
                    "epoch": i / n,
                    "eval_logps/chosen": -31.0,
                    "eval_logps/rejected": -31.0,
                    "eval_loss": float(eval_loss[i]),
                    "eval_rewards/accuracies": float(eval_acc[i]),
                    "eval_rewards/chosen": 0.0,
                    "eval_rewards/margins": float(0.69 - eval_loss[i]),
                    "eval_rewards/rejected": 0.0,
                    "eval_runtime": 0.1,
                    "eval_samples_per_second": 80.0,
                    "eval_steps_per_second": 10.0,
                    "step": i + 1,
                }
            )
    return write_trainer_state(d, hist)


def verl_console(
    path: Path, rows: list[dict[str, float]], ray_prefix: bool = True, numpy2: bool = True
) -> Path:
    """verl LocalLogger lines: 'step:N - key:value - ...' (pprint of np.float64 under numpy 2)."""
    pre = "(TaskRunner pid=31337) " if ray_prefix else ""
    lines = [f"{pre}Using LocalLogger is deprecated. The constructor API will change"]
    for i, row in enumerate(rows, start=1):
        parts = [f"step:{i}"]
        for k, v in row.items():
            parts.append(f"{k}:np.float64({v!r})" if numpy2 else f"{k}:{v!r}")
        lines.append(pre + " - ".join(parts))
    path.write_text("\n".join(lines) + "\n")
    return path


def verl_jsonl(path: Path, rows: list[dict[str, float]]) -> Path:
    """verl file logger: one {"step": N, "data": {...}} object per line."""
    path.write_text(
        "".join(json.dumps({"step": i, "data": r}) + "\n" for i, r in enumerate(rows, start=1))
    )
    return path


def analyze(*paths: Path) -> Report:
    return diagnose([str(p) for p in paths], jobs=1)


def kinds(report: Report, at_least: Severity = Severity.INFO) -> set[str]:
    return {f.kind for f in report.findings if f.severity >= at_least}
