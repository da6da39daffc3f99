"""Per-cell numbers, per-setting LR sensitivity, and the sweep's result record. No torch.

Everything here is a pure function of loss/metric arrays or of an analyze ``Report``, so the
numbers a sweep reports can be tested on hand-made inputs and recomputed from saved run dirs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from stabdiag import table as T
from stabdiag.findings import Severity
from stabdiag.report import Report
from stabdiag.table import RunData

SCHEMA_VERSION = 1
FINAL_FRAC = 0.1
"""Final loss = mean train loss over the last 10% of steps: per-step train losses on a corpus
seen less than once are held-out estimates, and 10% of the steps average more tokens than the
trainer's few evaluation batches do."""

DEFINITIONS = {
    "final_loss": "mean train loss over the last 10% of steps (null when any is NaN/Inf: diverged)",
    "best_loss": "lowest mean train loss over any window of that same length",
    "initial_loss": "train loss at the first step, before any update (l0)",
    "max_attn_logit": "largest max |q.k|/sqrt(d) over all layers and steps",
    "logz_drift": "output log-Z (mean log-sum-exp of the logits) at the last step minus the first",
    "lr_sensitivity": "Wortsman et al. 2023 (arXiv 2309.14322): mean over the setting's LR grid of "
                      "min(final loss, l0) - l*, where l* = min over the setting's LRs of "
                      "min(final loss, l0); a diverged cell counts as l0",
    "unstable": "a cell whose final loss is NaN/Inf or that has a warning or error finding",
}


@dataclass(frozen=True)
class CellResult:
    """What one grid cell measured. Non-finite floats stand for "not available / diverged"."""

    setting: str
    lr: float
    run_dir: str
    final_loss: float
    final_val_loss: float
    best_loss: float
    initial_loss: float
    max_attn_logit: float
    logz_drift: float
    max_abs_logz: float
    steps_done: int
    stop_reason: str
    findings: tuple[tuple[str, str], ...] = ()
    """(kind, max severity) per finding kind, most severe first."""
    wall_s: float = math.nan
    reused: bool = False
    """True when this invocation found the cell finished and did not train it again."""

    @property
    def diverged(self) -> bool:
        return not math.isfinite(self.final_loss)

    @property
    def unstable_kinds(self) -> tuple[str, ...]:
        return tuple(k for k, sev in self.findings if sev in ("warning", "error"))

    @property
    def unstable(self) -> bool:
        return self.diverged or bool(self.unstable_kinds)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["findings"] = {k: sev for k, sev in self.findings}
        return {k: _json_float(v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CellResult:
        vals = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for k, v in vals.items():
            if v is None and k not in ("run_dir", "stop_reason", "setting"):
                vals[k] = math.nan
        vals["findings"] = tuple((k, s) for k, s in dict(d.get("findings") or {}).items())
        return cls(**vals)


@dataclass(frozen=True)
class SettingSummary:
    name: str
    overrides: tuple[str, ...]
    lr_sensitivity: float
    best_final_loss: float
    best_lr: float
    unstable_cells: int

    def to_dict(self) -> dict[str, Any]:
        return {k: _json_float(v) for k, v in asdict(self).items()} | {"overrides": list(self.overrides)}


@dataclass(frozen=True)
class SweepResult:
    preset: str
    recipe: str
    lrs: tuple[float, ...]
    common: tuple[str, ...]
    out_dir: str
    device: str
    cells: tuple[CellResult, ...]
    settings: tuple[SettingSummary, ...]
    wall_s: float
    plots: tuple[str, ...] = field(default=())

    def cells_of(self, setting: str) -> list[CellResult]:
        return sorted((c for c in self.cells if c.setting == setting), key=lambda c: c.lr)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": "sweep",
            "preset": self.preset, "recipe": self.recipe, "lrs": list(self.lrs),
            "common": list(self.common), "out_dir": self.out_dir, "device": self.device,
            "wall_s": _json_float(self.wall_s),
            "definitions": DEFINITIONS,
            "settings": [s.to_dict() for s in self.settings],
            "cells": [c.to_dict() for c in self.cells],
            "plots": list(self.plots),
        }


def _json_float(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, tuple):
        return list(v)
    return v


# --- pure numbers ---------------------------------------------------------------------------


def final_window(n: int) -> int:
    return max(1, round(n * FINAL_FRAC))


def final_loss(losses: Sequence[float]) -> float:
    """Mean of the last 10% of the losses; NaN if any of them is non-finite (the run diverged)."""
    arr = np.asarray(losses, dtype=float)
    if not len(arr):
        return math.nan
    tail = arr[-final_window(len(arr)):]
    return float(tail.mean()) if np.isfinite(tail).all() else math.nan


def best_loss(losses: Sequence[float]) -> float:
    """Lowest moving average (final-window length) over the run: the best it ever was, de-noised."""
    arr = np.asarray(losses, dtype=float)
    if not len(arr):
        return math.nan
    w = final_window(len(arr))
    means = np.convolve(arr, np.ones(w) / w, mode="valid")  # a NaN poisons only its windows
    means = means[np.isfinite(means)]
    return float(means.min()) if len(means) else math.nan


def lr_sensitivity(final_losses: Sequence[float], initial_losses: Sequence[float]) -> float:
    """Wortsman et al. 2023, LR sensitivity of one setting over its LR grid.

    E_eta[min(l(eta), l0) - l*] with l* = min_eta min(l(eta), l0). A diverged cell (non-finite
    final loss) counts as l0: the cap is what keeps one NaN from making the mean meaningless.
    NaN when no cell finished with a finite loss (nothing to measure sensitivity against).
    """
    if len(final_losses) != len(initial_losses) or not len(final_losses):
        raise ValueError("one final and one initial loss per LR, at least one LR")
    if not any(math.isfinite(f) for f in final_losses) or not all(
            math.isfinite(x) for x in initial_losses):
        return math.nan
    capped = [min(f, l0) if math.isfinite(f) else l0
              for f, l0 in zip(final_losses, initial_losses, strict=True)]
    best = min(capped)
    return sum(c - best for c in capped) / len(capped)


def summarize_setting(name: str, overrides: Sequence[str], cells: Sequence[CellResult]) -> SettingSummary:
    cells = sorted(cells, key=lambda c: c.lr)
    finite = [c for c in cells if math.isfinite(c.final_loss)]
    best = min(finite, key=lambda c: c.final_loss) if finite else None
    return SettingSummary(
        name=name, overrides=tuple(overrides),
        lr_sensitivity=lr_sensitivity([c.final_loss for c in cells], [c.initial_loss for c in cells])
        if cells else math.nan,
        best_final_loss=best.final_loss if best else math.nan,
        best_lr=best.lr if best else math.nan,
        unstable_cells=sum(c.unstable for c in cells),
    )


# --- from a trained run ---------------------------------------------------------------------


def _values(run: RunData, metric: str) -> np.ndarray:
    s = run.get(metric)
    return np.asarray(s.values, dtype=float) if s is not None else np.empty(0)


def _finite_max(values: np.ndarray) -> float:
    v = values[np.isfinite(values)]
    return float(v.max()) if len(v) else math.nan


def finding_kinds(report: Report) -> tuple[tuple[str, str], ...]:
    """(kind, max severity) per kind, most severe first, then by name."""
    worst: dict[str, Severity] = {}
    for f in report.findings:
        worst[f.kind] = max(worst.get(f.kind, f.severity), f.severity)
    return tuple((k, s.label) for k, s in sorted(worst.items(), key=lambda kv: (-kv[1], kv[0])))


def cell_result(report: Report, *, setting: str, lr: float, run_dir: str, steps_done: int,
                stop_reason: str, final_val_loss: float, wall_s: float) -> CellResult:
    """The cell's numbers from analyze's report of its run directory (one run)."""
    if report.table is None or not report.runs:
        raise ValueError(f"{run_dir}: the analysis found no run to measure")
    run = report.table.run_data(report.runs[0].name)
    loss = _values(run, T.TRAIN_LOSS)
    logz = _values(run, T.OUTPUT_LOGZ)
    finite_logz = logz[np.isfinite(logz)]
    return CellResult(
        setting=setting, lr=lr, run_dir=run_dir,
        final_loss=final_loss(loss) if stop_reason != "nonfinite" else math.nan,
        final_val_loss=final_val_loss,
        best_loss=best_loss(loss),
        initial_loss=float(loss[0]) if len(loss) else math.nan,
        max_attn_logit=_finite_max(_values(run, T.MAX_ATTN_LOGIT)),
        logz_drift=float(finite_logz[-1] - finite_logz[0]) if len(finite_logz) else math.nan,
        max_abs_logz=_finite_max(np.abs(finite_logz)),
        steps_done=steps_done, stop_reason=stop_reason,
        findings=finding_kinds(report), wall_s=wall_s,
    )
