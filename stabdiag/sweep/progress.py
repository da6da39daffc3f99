"""The grid's progress display on stderr: cells done/total, and each finished cell's numbers.

An `Observer` so the runner stays display-free; a rich `Progress` because `stabdiag train`
already shows one (same look). Off a terminal it prints one line per finished cell instead, so
CI logs still say how far a sweep got.
"""

from __future__ import annotations

import math
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from stabdiag.sweep.results import CellResult
from stabdiag.sweep.runner import Observer
from stabdiag.sweep.spec import Cell


def cell_line(cell: Cell, result: CellResult) -> str:
    seed = f" seed {cell.seed}"
    if result.failed:
        return f"{cell.setting} lr={cell.lr:.3g}{seed}: FAILED ({result.error})"
    final = "diverged" if result.diverged else f"{result.final_loss:.3f}"
    attn = f"{result.max_attn_logit:.3g}" if math.isfinite(result.max_attn_logit) else "–"
    kinds = ",".join(result.unstable_kinds)
    how = "reused" if result.reused else f"{result.wall_s:.0f} s"
    return (
        f"{cell.setting} lr={cell.lr:.3g}{seed}: final loss {final}, max attn logit {attn}"
        f"{'  [' + kinds + ']' if kinds else ''} ({how})"
    )


class GridProgress(Observer):
    """Use as a context manager around `run_sweep(..., observer=...)`."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal
        cols = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        self.bar = Progress(*cols, console=console, transient=False, disable=not self.live)
        self.grid = self.bar.add_task("grid", total=None, info="")
        self.cell = None

    def __enter__(self) -> GridProgress:
        self.bar.__enter__()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.bar.__exit__(et, ev, tb)

    def _say(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def started(self, total: int, reused: int, where: str) -> None:
        self.bar.update(self.grid, total=total, completed=0)
        self._say(
            f"sweep: {total} cells, {reused} already finished, {total - reused} to train {where}"
        )

    def cell_started(self, cell: Cell) -> None:
        if self.cell is not None:
            self.bar.remove_task(self.cell)
        self.cell = self.bar.add_task(
            f"{cell.setting} lr={cell.lr:.3g} s{cell.seed}", total=cell.config.steps, info=""
        )

    def cell_step(self, cell: Cell, step: int, metrics: dict[str, float]) -> None:
        if self.cell is not None:
            loss = metrics.get("train/loss")
            self.bar.update(self.cell, completed=step)
            if loss is not None:
                self.bar.update(self.cell, info=f"loss {loss:.4g}")

    def cell_done(self, cell: Cell, result: CellResult) -> None:
        if self.cell is not None:
            self.bar.remove_task(self.cell)
            self.cell = None
        self.bar.advance(self.grid)
        final = (
            "failed"
            if result.failed
            else "diverged"
            if result.diverged
            else f"{result.final_loss:.3f}"
        )
        self.bar.update(
            self.grid, info=f"last: {cell.setting} lr={cell.lr:.3g} s{cell.seed} final {final}"
        )
        if not result.reused or not self.live:
            self._say(cell_line(cell, result))
