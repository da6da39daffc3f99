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
import json
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
    "load_result",
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
    from stabdiag.render.sweep import render_sweep_json, save_sweep_plot

    out = Path(out_dir or result.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = save_sweep_plot(result, out / "sweep")
    result = dataclasses.replace(result, plots=tuple(str(p) for p in plots))
    write_atomic(out / "sweep.json", render_sweep_json(result))
    return result


def load_result(path: str | Path) -> SweepResult:
    """Read a `sweep.json` back (for re-rendering without re-running); the summaries are
    recomputed from the cells, so a version-1 file gains points and comparisons."""
    d = json.loads(Path(path).read_text())
    cells = tuple(CellResult.from_dict(c) for c in d["cells"])
    settings = [(s["name"], tuple(s["overrides"])) for s in d["settings"]]
    points, sums, comparisons = summarize(settings, d["lrs"], cells)
    return SweepResult(
        preset=d["preset"],
        recipe=d["recipe"],
        lrs=tuple(d["lrs"]),
        common=tuple(d["common"]),
        out_dir=d["out_dir"],
        device=d["device"],
        cells=cells,
        settings=sums,
        wall_s=_f(d["wall_s"]),
        plots=tuple(d.get("plots", ())),
        seeds=tuple(d.get("seeds") or sorted({c.seed for c in cells}) or (0,)),
        backend=d.get("backend", "local"),
        points=points,
        comparisons=comparisons,
    )


def _f(v: float | None) -> float:
    return float("nan") if v is None else float(v)
