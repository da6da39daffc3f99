"""Instrumented reference training (`stabdiag train`); needs the `train` extra (torch).

`import stabdiag.train` does not import torch: `TrainConfig` and `resolve` come from the
torch-free `config` module, and `train`/`TrainResult` are loaded on first use, so the CLI can
build its options on a machine without torch and say "install stabdiag[train]" only when asked
to train.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stabdiag.train.config import PRESETS, RECIPES, TrainConfig, resolve

if TYPE_CHECKING:
    from stabdiag.train.loop import TrainResult, train

__all__ = ["PRESETS", "RECIPES", "TrainConfig", "TrainResult", "resolve", "train"]


def __getattr__(name: str) -> Any:
    if name in ("train", "TrainResult"):
        try:
            from stabdiag.train import loop
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] == "torch":
                from stabdiag.errors import TrainError

                raise TrainError(
                    "stabdiag train needs PyTorch: pip install 'stabdiag[train]'"
                ) from None
            raise
        return getattr(loop, name)
    raise AttributeError(f"module 'stabdiag.train' has no attribute {name!r}")
