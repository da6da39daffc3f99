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

SCHEMA_VERSION = 2
"""2: cells are per seed (`seed`, `device`, `error`), with `points` (per setting and LR, over
seeds) and `comparisons`; a version-1 file (one seed, no failures) still loads."""
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
    "seeds": "every (setting, LR) point is trained once per seed; the seed sets init and data "
    "order, and seed k is shared by all settings and LRs (paired)",
    "spread": "per point: mean, sample std and min-max over seeds of the finite values",
    "lr_sensitivity_interval": "min-max over seeds of the per-seed LR sensitivity (each seed's "
    "own LR curve); its mean is the setting's LR sensitivity",
    "resolved": "two settings' LR sensitivities differ by more than the seed spread: their "
    "per-seed min-max intervals do not overlap",
    "failed": "a cell whose training raised or whose worker died; not counted, retried on re-run",
}


@dataclass(frozen=True)
class CellResult:
    """What one grid cell (setting, LR, seed) measured. Non-finite floats stand for "not
    available / diverged"; a non-empty `error` marks a cell that failed to train (no numbers)."""

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
    seed: int = 0
    device: str = ""
    """Where it trained: 'cpu', 'cuda:1', or 'HOST/cuda:0' for a Ray worker."""
    error: str = ""

    @property
    def failed(self) -> bool:
        return bool(self.error)

    @property
    def diverged(self) -> bool:
        return not self.failed and not math.isfinite(self.final_loss)

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
            if v is None and k not in ("run_dir", "stop_reason", "setting", "device", "error"):
                vals[k] = math.nan
        vals["findings"] = tuple((k, s) for k, s in dict(d.get("findings") or {}).items())
        return cls(**vals)


def failed_cell(
    setting: str,
    lr: float,
    seed: int,
    run_dir: str,
    error: str,
    *,
    device: str = "",
    wall_s: float = math.nan,
) -> CellResult:
    """A cell that did not train: no numbers, only why."""
    nan = math.nan
    return CellResult(
        setting=setting,
        lr=lr,
        run_dir=run_dir,
        final_loss=nan,
        final_val_loss=nan,
        best_loss=nan,
        initial_loss=nan,
        max_attn_logit=nan,
        logz_drift=nan,
        max_abs_logz=nan,
        steps_done=0,
        stop_reason="failed",
        wall_s=wall_s,
        seed=seed,
        device=device,
        error=error or "failed",
    )


@dataclass(frozen=True)
class Spread:
    """Mean, sample std and min-max over seeds of the finite values (n of them)."""

    mean: float
    std: float
    lo: float
    hi: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
        if not len(v):
            return cls(math.nan, math.nan, math.nan, math.nan, 0)
        std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        return cls(float(v.mean()), std, float(v.min()), float(v.max()), len(v))

    def to_dict(self) -> dict[str, Any]:
        return {k: _json_float(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class PointSummary:
    """One (setting, LR) point over its seeds."""

    setting: str
    lr: float
    seeds: int
    """Cells with numbers (failed cells are not counted)."""
    failed: int
    diverged: int
    final_loss: Spread
    best_loss: Spread
    max_attn_logit: Spread
    capped_final: Spread
    """min(final, l0) per seed, a diverged seed at l0: what the LR sensitivity counts."""
    initial_loss: float
    logz_drift: float
    findings: tuple[tuple[str, str, int], ...] = ()
    """(kind, worst severity, seeds with it), most severe first."""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "setting": self.setting,
            "lr": self.lr,
            "seeds": self.seeds,
            "failed": self.failed,
            "diverged": self.diverged,
        }
        for k in ("final_loss", "best_loss", "max_attn_logit", "capped_final"):
            d[k] = getattr(self, k).to_dict()
        d["initial_loss"] = _json_float(self.initial_loss)
        d["logz_drift"] = _json_float(self.logz_drift)
        d["findings"] = [{"kind": k, "severity": s, "seeds": n} for k, s, n in self.findings]
        return d


@dataclass(frozen=True)
class SettingSummary:
    """One stabilizer setting across the LR grid and seeds: its LR sensitivity (with the seed
    spread), its best final loss and LR, and how many cells were unstable."""

    name: str
    overrides: tuple[str, ...]
    lr_sensitivity: float
    """Mean over seeds of the per-seed LR sensitivity (with one seed: that seed's)."""
    best_final_loss: float
    """Lowest mean final loss over the LRs whose seeds all finished finite."""
    best_lr: float
    unstable_cells: int
    sensitivity_lo: float = math.nan
    sensitivity_hi: float = math.nan
    seed_sensitivities: tuple[tuple[int, float], ...] = ()
    """(seed, LR sensitivity of that seed's LR curve); seeds with a failed cell are left out."""
    best_final_lo: float = math.nan
    best_final_hi: float = math.nan
    failed_cells: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = {k: _json_float(v) for k, v in asdict(self).items()}
        d["overrides"] = list(self.overrides)
        d["seed_sensitivities"] = {str(s): _json_float(v) for s, v in self.seed_sensitivities}
        return d


@dataclass(frozen=True)
class Comparison:
    """Two settings next to each other in the LR-sensitivity ranking (`lower` is more stable)."""

    lower: str
    higher: str
    difference: float
    resolved: bool | None
    """True: the per-seed intervals do not overlap; False: the difference is within the seed
    spread; None: one seed, no spread measured."""
    paired_wins: int
    """Seeds on which `lower` had the lower LR sensitivity (seeds are paired across settings)."""
    paired_seeds: int

    @property
    def verdict(self) -> str:
        if self.resolved is None:
            return "one seed: no seed spread measured (use --seeds 3 or more)"
        if self.resolved:
            return "larger than the seed spread"
        return "within the seed spread: not resolved by these seeds"

    def to_dict(self) -> dict[str, Any]:
        return {
            "lower": self.lower,
            "higher": self.higher,
            "difference": _json_float(self.difference),
            "resolved": self.resolved,
            "paired_wins": self.paired_wins,
            "paired_seeds": self.paired_seeds,
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class SweepResult:
    """A whole sweep: the grid it ran, every cell's result, each setting's summary and the
    comparisons between settings; written as ``sweep.json`` and rendered by ``render.sweep``."""

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
    seeds: tuple[int, ...] = (0,)
    backend: str = "local"
    points: tuple[PointSummary, ...] = ()
    comparisons: tuple[Comparison, ...] = ()

    def cells_of(self, setting: str) -> list[CellResult]:
        return sorted((c for c in self.cells if c.setting == setting), key=lambda c: (c.lr, c.seed))

    def points_of(self, setting: str) -> list[PointSummary]:
        return sorted((p for p in self.points if p.setting == setting), key=lambda p: p.lr)

    @property
    def failed(self) -> tuple[CellResult, ...]:
        return tuple(c for c in self.cells if c.failed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": "sweep",
            "preset": self.preset,
            "recipe": self.recipe,
            "lrs": list(self.lrs),
            "seeds": list(self.seeds),
            "common": list(self.common),
            "out_dir": self.out_dir,
            "backend": self.backend,
            "device": self.device,
            "wall_s": _json_float(self.wall_s),
            "definitions": DEFINITIONS,
            "settings": [s.to_dict() for s in self.settings],
            "comparisons": [c.to_dict() for c in self.comparisons],
            "points": [p.to_dict() for p in self.points],
            "cells": [c.to_dict() for c in self.cells],
            "failed_cells": len(self.failed),
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
    tail = arr[-final_window(len(arr)) :]
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
        math.isfinite(x) for x in initial_losses
    ):
        return math.nan
    capped = [
        min(f, l0) if math.isfinite(f) else l0
        for f, l0 in zip(final_losses, initial_losses, strict=True)
    ]
    best = min(capped)
    return sum(c - best for c in capped) / len(capped)


def capped_final(c: CellResult) -> float:
    """What the LR sensitivity counts for one cell: min(final, l0), a diverged cell at l0."""
    if c.failed:
        return math.nan
    if c.diverged:
        return c.initial_loss
    return min(c.final_loss, c.initial_loss) if math.isfinite(c.initial_loss) else c.final_loss


def _severity_rank(label: str) -> int:
    return {"error": 0, "warning": 1, "info": 2}.get(label, 3)


def summarize_point(setting: str, lr: float, cells: Sequence[CellResult]) -> PointSummary:
    ok = [c for c in cells if not c.failed]
    kinds: dict[str, tuple[str, int]] = {}
    for c in ok:
        for kind, sev in c.findings:
            worst, n = kinds.get(kind, (sev, 0))
            kinds[kind] = (min(worst, sev, key=_severity_rank), n + 1)
    return PointSummary(
        setting=setting,
        lr=lr,
        seeds=len(ok),
        failed=len(cells) - len(ok),
        diverged=sum(c.diverged for c in ok),
        final_loss=Spread.of([c.final_loss for c in ok]),
        best_loss=Spread.of([c.best_loss for c in ok]),
        max_attn_logit=Spread.of([c.max_attn_logit for c in ok]),
        capped_final=Spread.of([capped_final(c) for c in ok]),
        initial_loss=Spread.of([c.initial_loss for c in ok]).mean,
        logz_drift=Spread.of([c.logz_drift for c in ok]).mean,
        findings=tuple(
            (k, s, n)
            for k, (s, n) in sorted(kinds.items(), key=lambda kv: (_severity_rank(kv[1][0]), kv[0]))
        ),
    )


def seed_sensitivities(
    lrs: Sequence[float], cells: Sequence[CellResult]
) -> tuple[tuple[int, float], ...]:
    """(seed, LR sensitivity of that seed's LR curve) for every seed with a result at each LR."""
    by_seed: dict[int, dict[float, CellResult]] = {}
    for c in cells:
        by_seed.setdefault(c.seed, {})[c.lr] = c
    out = []
    for seed in sorted(by_seed):
        row = by_seed[seed]
        if any(lr not in row or row[lr].failed for lr in lrs):
            continue
        out.append(
            (
                seed,
                lr_sensitivity(
                    [row[lr].final_loss for lr in lrs], [row[lr].initial_loss for lr in lrs]
                ),
            )
        )
    return tuple(out)


def summarize_setting(
    name: str,
    overrides: Sequence[str],
    cells: Sequence[CellResult],
    lrs: Sequence[float] | None = None,
) -> SettingSummary:
    cells = sorted(cells, key=lambda c: (c.lr, c.seed))
    grid = sorted(set(lrs if lrs is not None else (c.lr for c in cells)))
    per_seed = seed_sensitivities(grid, cells)
    sens = [v for _, v in per_seed if math.isfinite(v)]
    points = [summarize_point(name, lr, [c for c in cells if c.lr == lr]) for lr in grid]
    # The best LR: lowest mean final loss among points where every seed finished finite.
    clean = [p for p in points if p.seeds and not p.diverged and math.isfinite(p.final_loss.mean)]
    best = min(clean, key=lambda p: p.final_loss.mean) if clean else None
    return SettingSummary(
        name=name,
        overrides=tuple(overrides),
        lr_sensitivity=float(np.mean(sens)) if sens else math.nan,
        best_final_loss=best.final_loss.mean if best else math.nan,
        best_lr=best.lr if best else math.nan,
        unstable_cells=sum(c.unstable for c in cells if not c.failed),
        sensitivity_lo=min(sens) if sens else math.nan,
        sensitivity_hi=max(sens) if sens else math.nan,
        seed_sensitivities=per_seed,
        best_final_lo=best.final_loss.lo if best else math.nan,
        best_final_hi=best.final_loss.hi if best else math.nan,
        failed_cells=sum(c.failed for c in cells),
    )


def compare_settings(settings: Sequence[SettingSummary]) -> tuple[Comparison, ...]:
    """Neighbours in the LR-sensitivity ranking, each said to be resolved by the seeds or not.

    Resolved means the two per-seed min-max intervals do not overlap: a difference smaller than
    the seed spread is reported as such, so the table does not rank settings by noise.
    """
    ranked = sorted(
        (s for s in settings if math.isfinite(s.lr_sensitivity)), key=lambda s: s.lr_sensitivity
    )
    out = []
    for a, b in zip(ranked, ranked[1:], strict=False):
        sa, sb = dict(a.seed_sensitivities), dict(b.seed_sensitivities)
        shared = [k for k in sa if k in sb and math.isfinite(sa[k]) and math.isfinite(sb[k])]
        resolved = None if min(len(sa), len(sb)) < 2 else a.sensitivity_hi < b.sensitivity_lo
        out.append(
            Comparison(
                lower=a.name,
                higher=b.name,
                difference=b.lr_sensitivity - a.lr_sensitivity,
                resolved=resolved,
                paired_wins=sum(sa[k] < sb[k] for k in shared),
                paired_seeds=len(shared),
            )
        )
    return tuple(out)


def summarize(
    settings: Sequence[tuple[str, Sequence[str]]], lrs: Sequence[float], cells: Sequence[CellResult]
) -> tuple[tuple[PointSummary, ...], tuple[SettingSummary, ...], tuple[Comparison, ...]]:
    """Points, setting summaries and comparisons of a grid's cells (pure)."""
    points = tuple(
        summarize_point(name, lr, [c for c in cells if c.setting == name and c.lr == lr])
        for name, _ in settings
        for lr in sorted(lrs)
    )
    sums = tuple(
        summarize_setting(name, ov, [c for c in cells if c.setting == name], lrs)
        for name, ov in settings
    )
    return points, sums, compare_settings(sums)


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


def cell_result(
    report: Report,
    *,
    setting: str,
    lr: float,
    run_dir: str,
    steps_done: int,
    stop_reason: str,
    final_val_loss: float,
    wall_s: float,
    seed: int = 0,
    device: str = "",
) -> CellResult:
    """The cell's numbers from analyze's report of its run directory (one run)."""
    if report.table is None or not report.runs:
        raise ValueError(f"{run_dir}: the analysis found no run to measure")
    run = report.table.run_data(report.runs[0].name)
    loss = _values(run, T.TRAIN_LOSS)
    logz = _values(run, T.OUTPUT_LOGZ)
    finite_logz = logz[np.isfinite(logz)]
    return CellResult(
        setting=setting,
        lr=lr,
        run_dir=run_dir,
        final_loss=final_loss(loss) if stop_reason != "nonfinite" else math.nan,
        final_val_loss=final_val_loss,
        best_loss=best_loss(loss),
        initial_loss=float(loss[0]) if len(loss) else math.nan,
        max_attn_logit=_finite_max(_values(run, T.MAX_ATTN_LOGIT)),
        logz_drift=float(finite_logz[-1] - finite_logz[0]) if len(finite_logz) else math.nan,
        max_abs_logz=_finite_max(np.abs(finite_logz)),
        steps_done=steps_done,
        stop_reason=stop_reason,
        findings=finding_kinds(report),
        wall_s=wall_s,
        seed=seed,
        device=device,
    )
