"""rank-divergence (SD602): one rank's loss or grad norm departs from the other ranks.

What it detects
    In ``RunData.by_rank`` (per-rank series of ``train/loss`` and ``train/grad_norm``), a rank whose
    values sit far from the median of the ranks for a sustained stretch of steps, or that turns
    non-finite while the others stay finite.

Why it matters
    Data-parallel replicas should see statistically identical losses; a rank that drifts points at
    a faulty device (silent data corruption), a desynchronised replica or a bad data shard.
    Megatron's rerun machinery exists to attribute exactly this.

How it is computed
    Align ranks on common steps (log scale for positive metrics). With >= 3 ranks: per step, the
    deviation of each rank from the cross-rank median, divided by the run-wide typical cross-rank
    spread (median over steps of the per-step MAD-sigma, floored at 1 % relative). A point is off
    when |z| >= ``z_threshold`` (6) and the rank differs by >= ``min_rel`` (10 %), or is
    non-finite while the median is finite. Sustained = >= ``min_points`` (3) consecutive off points:
    ``warning``; >= ``error_points`` (10) points and >= 5 % of the steps: ``error``. With 2 ranks no
    rank can be singled out: a sustained relative gap >= 20 % gives one ``warning`` naming both.
    Skipped when fewer than 2 ranks are logged.

Known false positives
    Logs where each rank reports its local (unreduced) micro-batch loss on very different data
    (e.g. length-bucketed shards) have a larger natural spread; the run-wide spread absorbs most.

References
    Megatron RerunStateMachine (attribution of transient vs persistent faults, exit codes 16/17);
    formats.md section 11 item 5 (per-rank prefixes).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from stabdiag.detectors import _stats as st
from stabdiag.detectors._common import finding
from stabdiag.detectors.base import Detector
from stabdiag.findings import Finding, Severity, Skipped
from stabdiag.table import GRAD_NORM, TRAIN_LOSS, RunData

CODE, KIND = "SD602", "rank-divergence"
METRICS = (TRAIN_LOSS, GRAD_NORM)


@dataclass(frozen=True, kw_only=True)
class Config:
    """Thresholds of the rank-divergence check (``[tool.stabdiag.detectors.rank-divergence]``)."""

    z_threshold: float = 6.0
    """With 3 or more ranks, a rank is off at a step when its deviation from the cross-rank median
    is at least this many typical cross-rank spreads (the run-wide median of per-step MAD-sigma)."""
    min_rel: float = 0.10
    """... and it differs from the median by at least this share (10 %), so ranks that agree to
    many digits cannot fire on rounding."""
    spread_floor: float = 0.01
    """Floor of the typical spread relative to the level (1 %): identical ranks have no spread."""
    min_points: int = 3
    """Consecutive off points (or, with two ranks, gapped points) that make a sustained departure:
    a warning."""
    error_points: int = 10
    """A departure of this many consecutive points, also covering ``error_frac`` of the steps, is
    an error (a faulty device or a desynchronised replica, not a blip)."""
    error_frac: float = 0.05
    """... and at least this share (5 %) of the common steps."""
    pair_rel: float = 0.20
    """With two ranks the median cannot single one out: a sustained relative gap of this size
    (20 %) between them is one warning."""
    pair_history: int = 20
    """Two ranks: log points before the gap that give each rank its own recent level."""
    pair_blame: float = 3.0
    """Two ranks: the one that moved this many times more from its own level than the other is
    named as the one that departed; otherwise both are named."""


DEFAULT = Config()


def _frame(ranks: dict) -> pd.DataFrame:
    cols = {r: pd.Series(s.values, index=s.steps) for r, s in sorted(ranks.items())}
    return pd.DataFrame(cols).sort_index()


def _longest(mask: np.ndarray) -> tuple[int, int, int]:
    a, b = st.segments(mask)
    if not a.size:
        return 0, -1, -1
    k = int(np.argmax(b - a))
    return int(b[k] - a[k] + 1), int(a[k]), int(b[k])


def _check_metric(run: RunData, metric: str, ranks: dict, cfg: Config) -> list[Finding]:
    df = _frame(ranks)
    steps = df.index.to_numpy()
    raw = df.to_numpy(dtype=np.float64)
    fin = raw[np.isfinite(raw)]
    use_log = fin.size > 0 and bool(np.all(fin > 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.log(raw) if use_log else raw.copy()
    x[~np.isfinite(x)] = np.nan
    name = "loss" if metric == TRAIN_LOSS else "grad norm"
    out: list[Finding] = []
    if x.shape[1] == 2:
        with np.errstate(invalid="ignore"):
            gap = np.abs(x[:, 0] - x[:, 1]) >= (
                np.log1p(cfg.pair_rel) if use_log else cfg.pair_rel * np.nanmean(np.abs(x), axis=1)
            )
        length, a, b = _longest(gap)
        if length >= cfg.min_points:
            r0, r1 = df.columns
            # With two ranks the median cannot outvote one; each rank's own recent past can: the
            # one that moved away from its own level is the one that departed.
            moved = []
            for j in (0, 1):
                before = x[max(0, a - cfg.pair_history) : a, j]
                ref = np.nanmedian(before) if np.isfinite(before).any() else np.nan
                seg = x[a : b + 1, j]
                moved.append(
                    float(np.nanmedian(np.abs(seg - ref)))
                    if np.isfinite(ref) and np.isfinite(seg).any()
                    else np.nan
                )
            culprit = None
            if all(np.isfinite(moved)) and max(moved) >= cfg.pair_blame * max(min(moved), 1e-12):
                culprit = (r0, r1)[int(np.argmax(moved))]
            who = (
                f"rank {culprit}'s {name} departed from rank {r1 if culprit == r0 else r0}'s"
                f" (it moved away from its own recent level; the other did not)"
                if culprit is not None
                else f"ranks {r0} and {r1} disagree on the {name}"
            )
            tail = "" if culprit is not None else "; with two ranks the faulty one cannot be told"
            out.append(
                finding(
                    CODE,
                    KIND,
                    run,
                    severity=Severity.WARNING,
                    metric=metric,
                    step_start=int(steps[a]),
                    step_end=int(steps[b]),
                    message=f"{who} by >= {100 * cfg.pair_rel:.0f}% for {length} consecutive log points from "
                    f"step {int(steps[a])}{tail}.",
                    evidence={
                        "ranks": [int(r0), int(r1)],
                        "points": length,
                        "onset_step": int(steps[a]),
                        "rank": None if culprit is None else int(culprit),
                    },
                )
            )
        return out
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: NaN, as intended
        med = np.nanmedian(x, axis=1)
        mad = st.MAD_TO_SIGMA * np.nanmedian(np.abs(x - med[:, None]), axis=1)
    typical = st.nanmedian(mad)
    floor = cfg.spread_floor if use_log else cfg.spread_floor * st.nanmedian(np.abs(med))
    spread = max(typical if np.isfinite(typical) else 0.0, floor)
    dev = x - med[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        rel_ok = np.abs(dev) >= (
            np.log1p(cfg.min_rel) if use_log else cfg.min_rel * np.abs(med)[:, None]
        )
        off = (np.abs(dev) / spread >= cfg.z_threshold) & rel_ok
    off |= ~np.isfinite(raw) & np.isfinite(med)[:, None]
    for j, rank in enumerate(df.columns):
        length, a, b = _longest(off[:, j])
        if length < cfg.min_points:
            continue
        total = int(off[:, j].sum())
        sev = (
            Severity.ERROR
            if length >= cfg.error_points and total >= cfg.error_frac * len(steps)
            else Severity.WARNING
        )
        seg = dev[a : b + 1, j]
        typ = float(np.nanmedian(seg)) if np.isfinite(seg).any() else float("nan")
        factor = float(np.exp(typ)) if use_log and np.isfinite(typ) else None
        how = (
            f"{factor:.2f}x the other ranks' median"
            if factor
            else "non-finite or far from the others"
        )
        out.append(
            finding(
                CODE,
                KIND,
                run,
                severity=sev,
                metric=metric,
                step_start=int(steps[a]),
                step_end=int(steps[b]),
                message=f"rank {rank}'s {name} departed from the other ranks ({how}) for {length} consecutive "
                f"log points from step {int(steps[a])}.",
                evidence={
                    "rank": int(rank),
                    "points": length,
                    "off_points_total": total,
                    "onset_step": int(steps[a]),
                    "ratio_to_median": factor,
                    "ranks": [int(r) for r in df.columns],
                    "typical_spread": spread,
                },
            )
        )
    return out


def check(run: RunData, cfg: Config = DEFAULT) -> list[Finding] | Skipped:
    avail = {m: run.by_rank.get(m, {}) for m in METRICS}
    avail = {m: r for m, r in avail.items() if len(r) >= 2}
    if not avail:
        return DETECTOR.skipped(run, f"fewer than 2 ranks logged for {TRAIN_LOSS} or {GRAD_NORM}")
    out: list[Finding] = []
    for metric, ranks in avail.items():
        out.extend(_check_metric(run, metric, dict(ranks), cfg))
    return out


DETECTOR = Detector(
    code=CODE,
    kind=KIND,
    summary="one rank's loss or grad norm departs from the others",
    doc=__doc__ or "",
    check=check,
    config=Config,
)
