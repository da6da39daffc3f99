"""Run the grid's cells: local worker processes (CPU cores or one per GPU) or Ray; resumable.

Why processes on CPU: a tiny model cannot keep many cores busy, so N single-threaded cells beat
one N-threaded cell; `spawn` (not fork) because a forked torch with live OpenMP threads can hang.
On GPUs each worker is pinned to one device (see `devices`), so cells spread over every GPU, one
per GPU at a time. One slot that needs no pinning trains in this process (live step progress).

Resume: a finished cell leaves `cell.json` (its config and its numbers) in its run directory.
A cell whose `cell.json` holds the same config is not trained again; anything else in its
directory (an interrupted, failed or differently-configured run) is replaced.

Failures: a cell whose training raises or whose worker dies is recorded as failed with its
reason and no `cell.json`, the rest of the grid goes on, and the next run retries it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from typing import Any

from stabdiag.errors import ConfigError, StabdiagError, TrainError
from stabdiag.sweep.devices import Dispatcher, Plan, Slot, parse_devices, plan_slots
from stabdiag.sweep.results import CellResult, SweepResult, cell_result, failed_cell, summarize
from stabdiag.sweep.spec import Cell, SweepSpec
from stabdiag.train.config import available_cores

RESULT_FILE = "cell.json"
# Where a cell's run directory lives does not change what it trained.
_IDENTITY_IGNORES = frozenset({"out_dir"})
# A sweep cell is one process: a launcher's distributed environment must not reach its trainer.
_DIST_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
BACKENDS = ("local", "ray")


class SweepInterrupted(StabdiagError):
    """Ctrl-C: finished cells are saved; the same command resumes."""


class Observer:
    """Progress hooks; the default does nothing. Called in the sweep's process only."""

    def started(self, total: int, reused: int, where: str) -> None:
        """The grid is known: `reused` of `total` cells were found finished; `where` says on
        what the rest trains ('on cpu (2 processes x 1 thread)', 'on Ray at ...')."""

    def cell_started(self, cell: Cell) -> None:
        """A cell begins training (in-process mode only: workers' cells start unseen)."""

    def cell_step(self, cell: Cell, step: int, metrics: dict[str, float]) -> None:
        """A training progress report of the running cell (in-process mode only)."""

    def cell_done(self, cell: Cell, result: CellResult) -> None:
        """A cell finished, failed (`result.failed`), or was found finished."""


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
    if result.failed:
        return None
    return replace(
        result,
        setting=cell.setting,
        lr=cell.lr,
        seed=cell.seed,
        run_dir=str(cell.run_dir),
        reused=True,
    )


def clear_run_dir(run_dir: os.PathLike[str] | str) -> None:
    """Remove what an unfinished or stale cell left, but never a directory the sweep did not make."""
    from pathlib import Path

    run_dir = Path(run_dir)
    if not run_dir.exists():
        return
    if run_dir.is_dir() and (
        not any(run_dir.iterdir())
        or (run_dir / "config.json").exists()
        or (run_dir / "metrics.csv").exists()
    ):
        shutil.rmtree(run_dir)
        return
    raise TrainError(
        f"{run_dir}: expected a sweep cell's run directory, found something else; "
        "choose another --out"
    )


def save_cell(cell: Cell, result: CellResult) -> None:
    path = cell.run_dir / RESULT_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(
        json.dumps(
            {"config": cell.config.to_dict(), "result": result.to_dict()}, indent=2, allow_nan=False
        )
        + "\n"
    )
    tmp.replace(path)  # atomic: a cell is finished only once its whole result is on disk


_clear = clear_run_dir  # older names, kept for callers of the first sweep API
_save = save_cell


# --- one cell -------------------------------------------------------------------------------


def train_cell(
    cell: Cell,
    progress: Callable[[int, dict[str, float]], None] | None = None,
    *,
    device: str = "",
    save: bool = True,
) -> CellResult | None:
    """Train one cell, analyze its run, save `cell.json`; None if it was interrupted."""
    from stabdiag.api import analyze
    from stabdiag.train import train

    clear_run_dir(cell.run_dir)
    t0 = time.perf_counter()
    res = train(cell.config, progress=progress)
    wall = time.perf_counter() - t0
    if res.interrupted:
        return None
    result = cell_result(
        analyze([res.run_dir]),  # through the facade: the policy file applies, as in `analyze`
        setting=cell.setting,
        lr=cell.lr,
        run_dir=str(res.run_dir),
        steps_done=res.steps_done,
        stop_reason=res.stop_reason,
        final_val_loss=res.final_val_loss,
        wall_s=wall,
        seed=cell.seed,
        device=device,
    )
    if save:
        save_cell(cell, result)
    return result


def describe_error(exc: BaseException) -> str:
    """One line: the exception's type and message (a failed cell's reason)."""
    text = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {text}"[:500]


def _slot_init(env: tuple[tuple[str, str], ...], threads: int) -> None:
    """Runs in a fresh (spawned) worker before any torch import: pin its GPU, set its threads."""
    for key in _DIST_ENV:
        os.environ.pop(key, None)
    for key, value in env:
        os.environ[key] = value
    import torch

    torch.set_num_threads(threads)


def _worker_run(cell: Cell, device: str) -> CellResult | None:
    return train_cell(cell, device=device)


# --- the grid -------------------------------------------------------------------------------


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise TrainError("stabdiag sweep needs torch: pip install 'stabdiag[train]'") from None
    return torch


def plan(
    spec: SweepSpec,
    todo: int,
    jobs: int | None,
    cores: int | None = None,
    *,
    devices: str | None = None,
    cpus_per_cell: int | None = None,
) -> Plan:
    """The local backend's slots for this grid on this machine (see `devices.plan_slots`)."""
    torch = _torch()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return plan_slots(
        cell_devices={c.config.device for c in spec.cells},
        devices=parse_devices(devices, gpus) if devices else None,
        visible_gpus=gpus,
        cores=cores or available_cores(),
        todo=todo,
        jobs=jobs,
        cpus_per_cell=cpus_per_cell,
        parent_visible=os.environ.get("CUDA_VISIBLE_DEVICES"),
    )


def run_sweep(
    spec: SweepSpec,
    *,
    jobs: int | None = None,
    observer: Observer | None = None,
    devices: str | None = None,
    backend: str = "local",
    ray_address: str | None = None,
    cpus_per_cell: int | None = None,
) -> SweepResult:
    """Train every unfinished cell and summarise the grid (per-cell numbers, LR sensitivity).

    backend 'local': worker processes on this machine's cores or GPUs (`devices`, `jobs`);
    'ray': one Ray task per cell on the cluster at `ray_address` (a local one when None).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if backend != "ray" and ray_address:
        raise ConfigError("--ray-address needs --backend ray")
    if backend == "ray" and devices:
        raise ConfigError(
            "--devices is for --backend local; Ray gives each cell one GPU "
            "(or --cpus-per-cell CPUs) of the cluster"
        )
    if cpus_per_cell is not None and cpus_per_cell < 1:
        raise ConfigError(f"--cpus-per-cell {cpus_per_cell}: expected at least 1")
    obs = observer or Observer()
    t0 = time.perf_counter()
    results: dict[int, CellResult] = {}
    for i, cell in enumerate(spec.cells):
        if (found := load_finished(cell)) is not None:
            results[i] = found
    todo = [i for i in range(len(spec.cells)) if i not in results]
    spec.out_dir.mkdir(parents=True, exist_ok=True)

    def done(i: int, result: CellResult) -> None:
        results[i] = result
        obs.cell_done(spec.cells[i], result)

    if backend == "ray":
        from stabdiag.sweep.ray_backend import RayBackend

        ray_backend = RayBackend.connect(ray_address, spec.cells, cpus_per_cell=cpus_per_cell or 1)
        where, device = ray_backend.describe(), ray_backend.device
        run: Callable[[], None] = lambda: ray_backend.run(spec.cells, todo, done)  # noqa: E731
    else:
        p = plan(spec, len(todo), jobs, devices=devices, cpus_per_cell=cpus_per_cell)
        where, device = p.describe(), p.device
        if p.in_process:
            run = lambda: _run_here(spec.cells, todo, p.slots[0], obs, done)  # noqa: E731
        else:
            run = lambda: _run_slots(spec.cells, todo, p.slots, done)  # noqa: E731
    obs.started(len(spec.cells), len(results), where)
    for i in sorted(results):
        obs.cell_done(spec.cells[i], results[i])
    try:
        run()
    except KeyboardInterrupt:
        raise _interrupted(results, len(spec.cells)) from None
    cells = tuple(results[i] for i in range(len(spec.cells)))
    points, settings, comparisons = summarize(
        [(s.name, s.overrides) for s in spec.settings], spec.lrs, cells
    )
    return SweepResult(
        preset=spec.preset,
        recipe=spec.recipe,
        lrs=spec.lrs,
        common=spec.common,
        out_dir=str(spec.out_dir),
        device=device,
        cells=cells,
        settings=settings,
        wall_s=time.perf_counter() - t0,
        seeds=spec.seeds,
        backend=backend,
        points=points,
        comparisons=comparisons,
    )


def _interrupted(results: dict[int, CellResult], total: int) -> SweepInterrupted:
    ok = sum(not r.failed for r in results.values())
    return SweepInterrupted(
        f"interrupted with {ok} of {total} cells finished; run the same command again to resume"
    )


def _fail(cell: Cell, reason: str, device: str) -> CellResult:
    return failed_cell(cell.setting, cell.lr, cell.seed, str(cell.run_dir), reason, device=device)


def _run_here(
    cells: Sequence[Cell],
    todo: list[int],
    slot: Slot,
    obs: Observer,
    done: Callable[[int, CellResult], None],
) -> None:
    torch = _torch()
    before = torch.get_num_threads()
    torch.set_num_threads(slot.threads)
    try:
        for i in todo:
            cell = cells[i]
            obs.cell_started(cell)
            try:
                result = train_cell(
                    cell, lambda step, m, c=cell: obs.cell_step(c, step, m), device=slot.device
                )
            except Exception as exc:  # noqa: BLE001 - one cell's failure must not sink the grid
                result = _fail(cell, describe_error(exc), slot.device)
            if result is None:
                raise KeyboardInterrupt
            done(i, result)
    finally:
        torch.set_num_threads(before)


def _executor(slot: Slot) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_slot_init,
        initargs=(slot.env, slot.threads),
    )


def _run_slots(
    cells: Sequence[Cell],
    todo: list[int],
    slots: Sequence[Slot],
    done: Callable[[int, CellResult], None],
    worker: Callable[[Cell, str], CellResult | None] = _worker_run,
) -> None:
    """One single-process executor per slot; the Dispatcher keeps every slot to one cell.

    `worker` (module-level, so a spawned process can import it) trains one cell on a device.
    """
    pools = [_executor(s) for s in slots]
    dispatch = Dispatcher(len(slots), todo)
    pending: dict[Future, tuple[int, int]] = {}

    def submit(assignments: list[tuple[int, int]]) -> None:
        for slot, i in assignments:
            pending[pools[slot].submit(worker, cells[i], slots[slot].device)] = (slot, i)

    try:
        submit(dispatch.start())
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                slot, i = pending.pop(fut)
                device = slots[slot].device
                try:
                    result = fut.result()
                except BrokenProcessPool:
                    result = _fail(
                        cells[i], "worker process died (killed, or out of memory?)", device
                    )
                    pools[slot].shutdown(wait=False, cancel_futures=True)
                    pools[slot] = _executor(slots[slot])
                except Exception as exc:  # noqa: BLE001 - the worker's error is the cell's
                    result = _fail(cells[i], describe_error(exc), device)
                if result is None:
                    raise KeyboardInterrupt
                done(i, result)
                submit(dispatch.finished(slot))
    finally:
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)
