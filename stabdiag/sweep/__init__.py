"""`stabdiag sweep`: LR-sensitivity maps of stabilizer settings (Wortsman et al. 2023).

Small models show large-run instabilities (attention-logit growth, output-logit drift) at high
learning rates; sweeping the LR for each stabilizer setting and summarising each setting by its
LR sensitivity shows which settings remove them. Modules: `spec` (grid parsing, seeds; torch-free),
`results` (per-cell numbers, spread over seeds, LR sensitivity with its interval; pure), `devices`
(local slots on CPU cores or GPUs, pure), `runner` (training the cells, resume, failures),
`ray_backend` (one Ray task per cell), `progress` (the grid display on stderr).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from stabdiag.atomic import write_atomic
from stabdiag.sweep.results import (
    DEFINITIONS,
    CellResult,
    Comparison,
    PointSummary,
    SettingSummary,
    Spread,
    SweepResult,
    lr_sensitivity,
    summarize,
)
from stabdiag.sweep.runner import BACKENDS, Observer, SweepInterrupted, run_sweep
from stabdiag.sweep.spec import (
    Cell,
    Setting,
    SweepSpec,
    build_spec,
    parse_lr_range,
    parse_lrs,
    parse_setting,
)

__all__ = [
    "BACKENDS",
    "DEFINITIONS",
    "Cell",
    "CellResult",
    "Comparison",
    "Observer",
    "PointSummary",
    "Setting",
    "SettingSummary",
    "Spread",
    "SweepInterrupted",
    "SweepResult",
    "SweepSpec",
    "build_spec",
    "lr_sensitivity",
    "parse_lr_range",
    "parse_lrs",
    "parse_setting",
    "run_sweep",
    "save_outputs",
    "summarize",
]


def save_outputs(result: SweepResult, out_dir: str | Path | None = None) -> SweepResult:
    """Write `sweep.json`, `sweep.png` and `sweep.svg` next to the cells; returns the result
    with `plots` filled in, so the JSON names the figures it comes with."""
    from stabdiag.atomic import write_files
    from stabdiag.render.sweep import render_sweep_json, sweep_plot_files

    out = Path(out_dir or result.out_dir)
    plots = write_files(out, sweep_plot_files(result, "sweep"))
    result = dataclasses.replace(result, plots=tuple(str(p) for p in plots))
    write_atomic(out / "sweep.json", render_sweep_json(result))
    return result
