"""Rewind and branch: plan a sibling run that restarts a finished (or stopped) run from one of
its checkpoints with a few changes. No torch here; `loop.train(plan.config, branch=plan)` runs it.

A researcher reproduces an instability to try a fix at the moment it happened: take the newest
checkpoint at or before the step, change what can change mid-run (LR, schedule, clipping, Adam
betas/eps/weight decay, z-loss, precision and loss scaling, dropout, soft-capping, batches to skip)
and train to the parent's end. What would need a different model or a different start (shape,
norms, QK-norm, init, seed, data) is refused: it needs a run from scratch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stabdiag.errors import TrainError
from stabdiag.train import checkpoint
from stabdiag.train.config import RESTART_FREE, TrainConfig, parse_skips, resolve_overrides

# Keys a branch may change: they act on the steps still to run, not on what the checkpoint holds.
BRANCHABLE = RESTART_FREE | {
    "lr",
    "min_lr",
    "warmup_steps",
    "decay",
    "grad_clip",
    "beta1",
    "beta2",
    "eps",
    "weight_decay",
    "z_loss",
    "precision",
    "loss_scale_init",
    "loss_scale_growth_interval",
    "dropout",
    "softmax_cap",
    "seq_warmup_steps",
    "batch_size",
    "skip_batches",
}
# Keys of the run's identity, set by the branch itself.
_IDENTITY = frozenset({"out_dir", "run_name", "preset", "recipe"})


@dataclass(frozen=True)
class BranchPlan:
    """A branch before it trains: the parent, the checkpoint it starts from, the changes and the
    resulting training config; refused changes never get this far."""

    parent_dir: Path
    at: int
    """The step asked for."""
    step: int
    """The checkpoint's step: the branch trains from here."""
    checkpoint: Path
    changes: dict[str, list[Any]]
    """key -> [parent's value, branch's value]."""
    config: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.parent_dir),
            "name": self.parent_dir.name,
            "at": self.at,
            "step": self.step,
            "checkpoint": str(self.checkpoint),
            "changes": self.changes,
        }


def plan_branch(
    parent_dir: Path,
    at: int,
    sets: list[str] | tuple[str, ...] = (),
    skip: list[str] | tuple[str, ...] = (),
    name: str | None = None,
) -> BranchPlan:
    """Check the parent, pick its checkpoint, apply and vet the changes; TrainError if any fails."""
    parent_dir = Path(parent_dir)
    cfg_path = parent_dir / "config.json"
    if not cfg_path.is_file():
        raise TrainError(
            f"{parent_dir}: expected a stabdiag train run directory "
            f"(config.json, checkpoints/), found no config.json"
        )
    try:
        saved = json.loads(cfg_path.read_text())
    except (OSError, ValueError):
        raise TrainError(
            f"{cfg_path}: expected the run's JSON config, found it unreadable"
        ) from None
    parent = TrainConfig.from_dict(saved, where=str(cfg_path))
    if at < 0:
        raise TrainError(f"--at {at}: expected a step >= 0")
    step, path = checkpoint.at_or_before(parent_dir / "checkpoints", at)

    values = resolve_overrides(parent, list(sets), where="--set")
    if "inject" in values:  # added to the parent's: its faults are part of what is reproduced
        values["inject"] = parent.inject + tuple(values["inject"])
    refused = sorted(k for k in values if k not in BRANCHABLE and values[k] != getattr(parent, k))
    if refused:
        raise TrainError(
            f"cannot branch with {', '.join(refused)} changed: the checkpoint's model and start "
            f"cannot take it mid-run; re-run from scratch (stabdiag train --set ...) instead"
        )
    new_skips = tuple(skip)
    for lo, _ in parse_skips(new_skips):
        if lo < step:
            raise TrainError(
                f"--skip-batches {lo}:...: the branch starts at step {step} "
                f"(its checkpoint); batches before it are already trained on"
            )
    if new_skips:
        values["skip_batches"] = tuple(values.get("skip_batches", parent.skip_batches)) + new_skips
    run_name = name or _free_name(parent_dir, f"{parent_dir.name}-at{step}")
    config = TrainConfig.from_dict(
        {**parent.to_dict(), **values, "run_name": run_name, "out_dir": str(parent_dir.parent)},
        where="branch",
    )
    if (parent_dir.parent / run_name).resolve() == parent_dir.resolve():
        raise TrainError(f"--name {run_name}: that is the parent run; pick a new name")
    changes = {
        k: [_plain(getattr(parent, k)), _plain(getattr(config, k))]
        for k in sorted(BRANCHABLE)
        if getattr(parent, k) != getattr(config, k)
    }
    return BranchPlan(parent_dir, at, step, path, changes, config)


def _free_name(parent_dir: Path, base: str) -> str:
    out = parent_dir.parent
    if not (out / base).exists():
        return base
    i = 2
    while (out / f"{base}-{i}").exists():
        i += 1
    return f"{base}-{i}"


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
