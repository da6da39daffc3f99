"""Save, keep and load our own checkpoints: plain state dicts, loaded with weights_only=True.

Each save writes `checkpoints/step-NNNNNNNN.pt` (to a `.tmp` name, fsynced, then renamed) and
points `checkpoints/latest.pt` at it (a hard link swapped in atomically; a copy where links are
not possible), so a save cut short by a crash, a signal or a full disk leaves the previous
checkpoint in place and loadable. Everything a bit-exact resume or a branch needs is in each one:
model, optimizer, loss scaler, the step, the data position (batches are a pure function of
(seed, data index, rank), so the position is the next data index plus the skipped ranges that
map steps to indices) and the torch RNG states (dropout).

Rotation (`rotate`) keeps the newest `keep` step checkpoints plus any pinned ones: the trainer
pins the last checkpoint before the first warning-or-worse finding it sees live, so rotation
never deletes the last healthy state a researcher would branch from.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stabdiag.errors import TrainError

if TYPE_CHECKING:  # torch is imported where a state is saved or loaded: listing needs none
    import torch

LATEST = "latest.pt"
_STEP_FILE = re.compile(r"^step-(\d{8,})\.pt$")


def step_file(ckpt_dir: Path, step: int) -> Path:
    return ckpt_dir / f"step-{step:08d}.pt"


def save(
    ckpt_dir: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    step: int,
    config: dict[str, Any],
    data: dict[str, Any] | None = None,
) -> Path:
    """Write the step's checkpoint and make it `latest.pt`; returns the step file."""
    import torch

    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "config": config,
        "data": data or {},
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    path = step_file(ckpt_dir, step)
    latest = ckpt_dir / LATEST
    tmp = path.with_name(path.name + ".tmp")
    link_tmp = latest.with_name(LATEST + ".tmp")
    try:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        with contextlib.suppress(FileNotFoundError):
            link_tmp.unlink()
        try:
            os.link(path, link_tmp)
        except OSError:  # no hard links here (some network and FAT filesystems): copy
            shutil.copyfile(path, link_tmp)
        os.replace(link_tmp, latest)
        _fsync_dir(ckpt_dir)
    except BaseException as exc:
        for t in (tmp, link_tmp):
            with contextlib.suppress(OSError):
                t.unlink()
        if isinstance(exc, Exception):  # a full disk shows up as OSError or torch's RuntimeError
            kept = (
                "the previous checkpoint is kept"
                if latest.exists()
                else "no checkpoint was written"
            )
            raise TrainError(
                f"{latest}: could not write the checkpoint "
                f"({getattr(exc, 'strerror', None) or exc}); {kept}"
            ) from None
        raise
    return path


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def available(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """The step checkpoints in a directory, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _STEP_FILE.match(p.name))]
    return sorted(found)


def at_or_before(ckpt_dir: Path, step: int) -> tuple[int, Path]:
    """The newest checkpoint at or before `step` (what a branch restarts from); TrainError
    listing what there is otherwise. A run from before step checkpoints has only `latest.pt`:
    its step is the run's `steps_done` (the trainer checks the file's own step when it loads it)."""
    found = available(ckpt_dir)
    if not found and (ckpt_dir / LATEST).is_file():
        try:
            done = json.loads((ckpt_dir.parent / "run.json").read_text()).get("steps_done")
        except (OSError, ValueError, AttributeError):
            done = None
        if isinstance(done, int):
            found = [(done, ckpt_dir / LATEST)]
    usable = [(s, p) for s, p in found if s <= step]
    if usable:
        return usable[-1]
    have = ", ".join(str(s) for s, _ in found) or "none"
    raise TrainError(
        f"{ckpt_dir}: expected a checkpoint at or before step {step}, found "
        f"checkpoints at steps: {have} (set checkpoint_interval to keep more)"
    )


def rotate(ckpt_dir: Path, keep: int, pinned: set[int] = frozenset()) -> list[int]:
    """Delete step checkpoints beyond the newest `keep` (0 = keep all), never a pinned one nor
    the one `latest.pt` is; returns the deleted steps."""
    found = available(ckpt_dir)
    if keep <= 0 or len(found) <= keep:
        return []
    deleted = []
    for s, p in found[:-keep]:
        if s in pinned:
            continue
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
        deleted.append(s)
    return deleted


def load(path: Path, device: torch.device) -> dict[str, Any]:
    """Load one of our checkpoints (a file, or a checkpoints directory for its latest.pt).

    weights_only=True: a foreign or crafted file is refused, never executed. Any failure is one
    line naming the file (torch's own message is several lines and comes with a warning)."""
    import torch

    if path.is_dir() or path.name == "checkpoints":
        path = path / LATEST
    if not path.exists():
        raise TrainError(f"{path}: expected a checkpoint to resume from, found none")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # a damaged or foreign file: say which, do not crash
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TrainError(
            f"{path}: expected a stabdiag checkpoint, could not load it "
            f"({type(exc).__name__}: {first[:200]})"
        ) from None
    missing = {"step", "model", "optimizer", "scaler", "rng_cpu"} - set(
        state if isinstance(state, dict) else ()
    )
    if missing:
        raise TrainError(
            f"{path}: expected a stabdiag checkpoint, found a file without "
            f"{', '.join(sorted(missing))}"
        )
    return state


def restore(
    state: dict[str, Any],
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    hyper: dict[str, Any] | None = None,
    fresh_scaler: bool = False,
) -> int:
    """Load state into the live objects; returns the number of steps already done.

    `hyper` re-applies optimizer hyperparameters after the load (load_state_dict brings back the
    saved betas, eps and weight decay; a branch that changes them must win). `fresh_scaler`
    keeps the new scaler as built (a branch that changes the precision or the initial scale)."""
    import torch

    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    for group, wd in zip(
        optimizer.param_groups, (hyper or {}).get("weight_decay", ()), strict=False
    ):
        group["weight_decay"] = wd
    for group in optimizer.param_groups:
        for key in ("betas", "eps"):
            if hyper and key in hyper:
                group[key] = hyper[key]
    if state["scaler"] and scaler.is_enabled() and not fresh_scaler:
        scaler.load_state_dict(state["scaler"])
        if hyper and "growth_interval" in hyper:
            scaler.set_growth_interval(hyper["growth_interval"])
    torch.set_rng_state(state["rng_cpu"].cpu())
    if state.get("rng_cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])
    return int(state["step"])
