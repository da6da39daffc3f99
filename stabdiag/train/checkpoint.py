"""Save and load our own checkpoints: plain state dicts, loaded with torch.load(weights_only=True).

One file, `checkpoints/latest.pt`, replaced atomically (written to `latest.pt.tmp`, fsynced, then
renamed over it), so a save cut short by a crash, a signal or a full disk leaves the previous
checkpoint in place and loadable. Everything a bit-exact resume needs is in it: model, optimizer,
loss scaler, the step, and the torch RNG states (dropout). Batches are a function of
(seed, step), so there is no data-loader state.
"""

from __future__ import annotations

import contextlib
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
    tmp = path.with_name(LATEST + ".tmp")
    try:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, Exception):  # a full disk shows up as OSError or torch's RuntimeError
            kept = "the previous checkpoint is kept" if path.exists() else "no checkpoint was written"
            raise TrainError(f"{path}: could not write the checkpoint "
                             f"({getattr(exc, 'strerror', None) or exc}); {kept}") from None
        raise
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
