"""Save and load our own checkpoints: plain state dicts, loaded with torch.load(weights_only=True).

One file, `checkpoints/latest.pt`, replaced atomically, so an interrupted save never leaves a
half-written checkpoint behind. Everything a bit-exact resume needs is in it: model, optimizer,
loss scaler, the step, and the torch RNG states (dropout). Batches are a function of
(seed, step), so there is no data-loader state.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from stabdiag.errors import TrainError

LATEST = "latest.pt"


def save(
    ckpt_dir: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler, step: int, config: dict[str, Any],
) -> Path:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "config": config,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    path = ckpt_dir / LATEST
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load(ckpt_dir: Path, device: torch.device) -> dict[str, Any]:
    path = ckpt_dir / LATEST
    if not path.exists():
        raise TrainError(f"{path}: expected a checkpoint to resume from, found none")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # a damaged or foreign file: say which, do not crash
        raise TrainError(f"{path}: expected a stabdiag checkpoint, could not load it ({exc})") from None


def restore(
    state: dict[str, Any], *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
) -> int:
    """Load state into the live objects; returns the number of steps already done."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng_cpu"].cpu())
    if state["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])
    return int(state["step"])
