"""`stabdiag sweep`: LR-sensitivity maps of stabilizer settings (Wortsman et al. 2023).

Small models show large-run instabilities (attention-logit growth, output-logit drift) at high
learning rates; sweeping the LR for each stabilizer setting and summarising each setting by its
LR sensitivity shows which settings remove them. Modules: `spec` (grid parsing, torch-free),
`results` (per-cell numbers and LR sensitivity, pure), `runner` (training the cells),
`progress` (the grid display on stderr).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from stabdiag.atomic import write_atomic
from stabdiag.sweep.results import (
    DEFINITIONS,
    CellResult,
    SettingSummary,
    SweepResult,
    lr_sensitivity,
)
from stabdiag.sweep.runner import Observer, SweepInterrupted, run_sweep
from stabdiag.sweep.spec import (
    Cell,
    Setting,
    SweepSpec,
    build_spec,
    parse_lr_range,
    parse_lrs,
    parse_setting,
)

__all__ = ["DEFINITIONS", "Cell", "CellResult", "Observer", "Setting", "SettingSummary",
           "SweepInterrupted", "SweepResult", "SweepSpec", "build_spec", "lr_sensitivity",
           "parse_lr_range", "parse_lrs", "parse_setting", "run_sweep", "save_outputs"]


def save_outputs(result: SweepResult, out_dir: str | Path | None = None) -> SweepResult:
    """Write `sweep.json`, `sweep.png` and `sweep.svg` next to the cells; returns the result
    with `plots` filled in, so the JSON names the figures it comes with."""
    from stabdiag.render.sweep import render_sweep_json, save_sweep_plot

    out = Path(out_dir or result.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = save_sweep_plot(result, out / "sweep")
    result = dataclasses.replace(result, plots=tuple(str(p) for p in plots))
    write_atomic(out / "sweep.json", render_sweep_json(result))
    return result


def load_result(path: str | Path) -> SweepResult:
    """Read a `sweep.json` back (for re-rendering without re-running)."""
    d = json.loads(Path(path).read_text())
    cells = tuple(CellResult.from_dict(c) for c in d["cells"])
    settings = tuple(SettingSummary(
        name=s["name"], overrides=tuple(s["overrides"]),
        lr_sensitivity=_f(s["lr_sensitivity"]), best_final_loss=_f(s["best_final_loss"]),
        best_lr=_f(s["best_lr"]), unstable_cells=s["unstable_cells"]) for s in d["settings"])
    return SweepResult(preset=d["preset"], recipe=d["recipe"], lrs=tuple(d["lrs"]),
                       common=tuple(d["common"]), out_dir=d["out_dir"], device=d["device"],
                       cells=cells, settings=settings, wall_s=_f(d["wall_s"]),
                       plots=tuple(d.get("plots", ())))


def _f(v: float | None) -> float:
    return float("nan") if v is None else float(v)
