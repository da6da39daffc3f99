"""Run the grid's cells: in parallel processes on CPU, one after another on a GPU; resumable.

Why processes on CPU: a tiny model cannot keep many cores busy, so N single-threaded cells beat
one N-threaded cell; `spawn` (not fork) because a forked torch with live OpenMP threads can hang.
On CUDA the cells share one device and run in this process, one after another.

Resume: a finished cell leaves `cell.json` (its config and its numbers) in its run directory.
A cell whose `cell.json` holds the same config is not trained again; anything else in its
directory (an interrupted or differently-configured run) is replaced.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from stabdiag.errors import StabdiagError, TrainError
from stabdiag.sweep.results import CellResult, SweepResult, cell_result, summarize_setting
from stabdiag.sweep.spec import Cell, SweepSpec

RESULT_FILE = "cell.json"
# Where a cell's run directory lives does not change what it trained.
_IDENTITY_IGNORES = frozenset({"out_dir"})


class SweepInterrupted(StabdiagError):
    """Ctrl-C: finished cells are saved; the same command resumes."""


class Observer:
    """Progress hooks; the default does nothing. Called in the sweep's process only."""

    def started(self, total: int, reused: int, workers: int, threads: int, device: str) -> None:
        """The grid is known: `reused` of `total` cells were found finished."""

    def cell_started(self, cell: Cell) -> None:
        """A cell begins training (sequential mode only: in parallel mode cells start unseen)."""

    def cell_step(self, cell: Cell, step: int, metrics: dict[str, float]) -> None:
        """A training progress report of the running cell (sequential mode only)."""

    def cell_done(self, cell: Cell, result: CellResult) -> None:
        """A cell finished or was found finished."""


@dataclass(frozen=True)
class Plan:
    device: str
    workers: int
    threads: int


# --- resume ---------------------------------------------------------------------------------


def _identity(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    d = json.loads(json.dumps(cfg_dict))  # tuples -> lists, as saved
    return {k: v for k, v in d.items() if k not in _IDENTITY_IGNORES}


def load_finished(cell: Cell) -> CellResult | None:
    """The saved result of a cell trained with exactly this config, or None."""
    try:
        saved = json.loads((cell.run_dir / RESULT_FILE).read_text())
        if _identity(saved["config"]) != _identity(cell.config.to_dict()):
            return None
        result = CellResult.from_dict(saved["result"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return replace(result, setting=cell.setting, lr=cell.lr, run_dir=str(cell.run_dir), reused=True)


def _clear(run_dir: Path) -> None:
    """Remove what an unfinished or stale cell left, but never a directory the sweep did not make."""
    if not run_dir.exists():
        return
    if run_dir.is_dir() and (not any(run_dir.iterdir()) or (run_dir / "config.json").exists()
                             or (run_dir / "metrics.csv").exists()):
        shutil.rmtree(run_dir)
        return
    raise TrainError(f"{run_dir}: expected a sweep cell's run directory, found something else; "
                     "choose another --out")


def _save(cell: Cell, result: CellResult) -> None:
    path = cell.run_dir / RESULT_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"config": cell.config.to_dict(), "result": result.to_dict()},
                              indent=2, allow_nan=False) + "\n")
    tmp.replace(path)  # atomic: a cell is finished only once its whole result is on disk


# --- one cell -------------------------------------------------------------------------------


def train_cell(cell: Cell, progress: Callable[[int, dict[str, float]], None] | None = None
               ) -> CellResult | None:
    """Train one cell, analyze its run, save `cell.json`; None if it was interrupted."""
    from stabdiag.diagnose import diagnose
    from stabdiag.train import train

    _clear(cell.run_dir)
    t0 = time.perf_counter()
    res = train(cell.config, progress=progress)
    wall = time.perf_counter() - t0
    if res.interrupted:
        return None
    result = cell_result(diagnose([res.run_dir]), setting=cell.setting, lr=cell.lr,
                         run_dir=str(res.run_dir), steps_done=res.steps_done,
                         stop_reason=res.stop_reason, final_val_loss=res.final_val_loss,
                         wall_s=wall)
    _save(cell, result)
    return result


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _worker_run(cell: Cell) -> CellResult | None:
    return train_cell(cell)


# --- the grid -------------------------------------------------------------------------------


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def plan(spec: SweepSpec, todo: int, jobs: int | None, cores: int | None = None) -> Plan:
    """Workers x threads <= cores on CPU; one cell at a time on CUDA (they share the device)."""
    try:
        import torch
    except ImportError:
        raise TrainError("stabdiag sweep needs torch: pip install 'stabdiag[train]'") from None
    devices = {c.config.device for c in spec.cells}
    cuda = "cuda" in devices or ("auto" in devices and torch.cuda.is_available())
    if cuda:
        return Plan("cuda", 1, torch.get_num_threads())
    cores = cores or available_cores()
    workers = max(1, min(jobs or cores, cores, max(todo, 1)))
    return Plan("cpu", workers, max(1, cores // workers))


def run_sweep(spec: SweepSpec, *, jobs: int | None = None, observer: Observer | None = None
              ) -> SweepResult:
    """Train every unfinished cell and summarise the grid (per-cell numbers, LR sensitivity)."""
    obs = observer or Observer()
    t0 = time.perf_counter()
    results: dict[int, CellResult] = {}
    for i, cell in enumerate(spec.cells):
        if (found := load_finished(cell)) is not None:
            results[i] = found
    todo = [i for i in range(len(spec.cells)) if i not in results]
    p = plan(spec, len(todo), jobs)
    obs.started(len(spec.cells), len(results), p.workers, p.threads, p.device)
    for i in sorted(results):
        obs.cell_done(spec.cells[i], results[i])
    spec.out_dir.mkdir(parents=True, exist_ok=True)
    if p.workers == 1:
        _run_here(spec.cells, todo, p, obs, results)
    else:
        _run_pool(spec.cells, todo, p, obs, results)
    cells = tuple(results[i] for i in range(len(spec.cells)))
    return SweepResult(
        preset=spec.preset, recipe=spec.recipe, lrs=spec.lrs, common=spec.common,
        out_dir=str(spec.out_dir), device=p.device, cells=cells,
        settings=tuple(summarize_setting(s.name, s.overrides, [c for c in cells if c.setting == s.name])
                       for s in spec.settings),
        wall_s=time.perf_counter() - t0,
    )


def _interrupted(results: dict[int, CellResult], total: int) -> SweepInterrupted:
    return SweepInterrupted(f"interrupted with {len(results)} of {total} cells finished; "
                            "run the same command again to resume")


def _run_here(cells: Sequence[Cell], todo: list[int], p: Plan, obs: Observer,
              results: dict[int, CellResult]) -> None:
    import torch

    before = torch.get_num_threads()
    if p.device == "cpu":
        torch.set_num_threads(p.threads)
    try:
        for i in todo:
            cell = cells[i]
            obs.cell_started(cell)
            result = train_cell(cell, lambda step, m, c=cell: obs.cell_step(c, step, m))
            if result is None:
                raise _interrupted(results, len(cells))
            results[i] = result
            obs.cell_done(cell, result)
    except KeyboardInterrupt:
        raise _interrupted(results, len(cells)) from None
    finally:
        torch.set_num_threads(before)


def _run_pool(cells: Sequence[Cell], todo: list[int], p: Plan, obs: Observer,
              results: dict[int, CellResult]) -> None:
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(p.workers, mp_context=ctx, initializer=_worker_init,
                               initargs=(p.threads,))
    pending: dict[Future, int] = {pool.submit(_worker_run, cells[i]): i for i in todo}
    try:
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                i = pending.pop(fut)
                result = fut.result()  # a worker's exception surfaces here
                if result is None:
                    raise _interrupted(results, len(cells))
                results[i] = result
                obs.cell_done(cells[i], result)
    except KeyboardInterrupt:
        raise _interrupted(results, len(cells)) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
