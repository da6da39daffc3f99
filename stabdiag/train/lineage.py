"""Branches and their parents: who a run was branched from, and one figure overlaying both.

A branch's `run.json` holds `parent` (the parent's directory, the checkpoint step and the
changes); its `metrics.csv` starts with the parent's rows before that step. The overlay draws the
parent's and the branch's loss and grad norm on shared axes, the branch point marked, so "the
spike is gone" is one look. No torch here (the analysis side uses it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from stabdiag import table as T
from stabdiag.atomic import write_atomic


@dataclass(frozen=True)
class Lineage:
    """A branch run and its parent: the parent's directory, the checkpoint step it was branched
    at and the changes it was trained with, as recorded in the branch's ``run.json``."""

    branch_dir: Path
    parent_dir: Path
    step: int
    changes: dict[str, Any]

    def describe(self) -> str:
        what = (
            ", ".join(f"{k} {v[0]!r} -> {v[1]!r}" for k, v in self.changes.items()) or "no changes"
        )
        return f"{self.branch_dir.name}: branch of {self.parent_dir} at step {self.step} ({what})"


def parent_of(run_dir: Path) -> Lineage | None:
    """The branch's lineage if `run_dir` is a stabdiag branch whose parent still exists."""
    run_dir = Path(run_dir)
    try:
        meta = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return None
    parent = meta.get("parent") if isinstance(meta, dict) else None
    if not isinstance(parent, dict) or not isinstance(parent.get("step"), int):
        return None
    where = Path(str(parent.get("run_dir", "")))
    if not where.is_dir():  # a relative path from elsewhere, or the runs moved together
        where = run_dir.parent / str(parent.get("name") or where.name)
    if not (where / "metrics.csv").is_file():
        return None
    changes = parent.get("changes") if isinstance(parent.get("changes"), dict) else {}
    return Lineage(run_dir, where, parent["step"], changes)


def _series(run_dir: Path, metric: str) -> pd.Series:
    frame = pd.read_csv(run_dir / "metrics.csv")
    if "rank" in frame.columns:
        frame = frame[frame["rank"] == frame["rank"].min()]
    s = frame[frame["metric"] == metric].drop_duplicates("step", keep="last")
    return s.set_index("step")["value"].astype(float).sort_index()


def overlay_figure(lineage: Lineage) -> Any:
    """Loss and grad norm of parent and branch, the branch point marked (matplotlib Figure)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    for ax, metric, label in (
        (axes[0], T.TRAIN_LOSS, "train loss"),
        (axes[1], T.GRAD_NORM, "grad norm"),
    ):
        parent = _series(lineage.parent_dir, metric)
        branch = _series(lineage.branch_dir, metric)
        branch = branch[branch.index >= lineage.step]
        for curve, color, lw, who in (
            (parent, "0.55", 1.0, f"parent {lineage.parent_dir.name}"),
            (branch, "tab:blue", 1.2, f"branch {lineage.branch_dir.name}"),
        ):
            if len(curve):
                ax.plot(curve.index, curve.to_numpy(), color=color, lw=lw, label=who)
        ax.axvline(
            lineage.step,
            color="tab:red",
            ls="--",
            lw=1.0,
            label=f"branch point (step {lineage.step})",
        )
        ax.set_ylabel(label)
        if metric == T.GRAD_NORM and len(parent) and (parent > 0).all():
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper right", fontsize=8)
    axes[1].set_xlabel("step")
    changes = ", ".join(f"{k}={_show(v[1])}" for k, v in lineage.changes.items()) or "no changes"
    fig.suptitle(
        f"{lineage.branch_dir.name} vs its parent  ·  {changes}",
        fontsize=11,
        x=0.01,
        ha="left",
        parse_math=False,
    )
    return fig


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def save_overlay(
    lineage: Lineage, out_dir: Path, formats: tuple[str, ...] = ("png",)
) -> list[Path]:
    """Write `<branch>-vs-parent.<fmt>` for each format; returns the paths."""
    from stabdiag.render.plots import figure_bytes, safe_name

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig = overlay_figure(lineage)
    paths = []
    try:
        for fmt in formats:
            path = out_dir / f"{safe_name(lineage.branch_dir.name)}-vs-parent.{fmt}"
            write_atomic(path, figure_bytes(fig, fmt))
            paths.append(path)
    finally:
        fig.clear()
    return paths
