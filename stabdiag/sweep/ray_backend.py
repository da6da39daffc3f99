"""The Ray backend: each grid cell is one Ray task on an existing cluster, or on a local one.

Results come back through Ray, not through a shared filesystem: a task trains its cell in a
temporary directory on whichever node runs it, analyzes the run there, and returns the cell's
numbers with the run directory's files (metrics, config, TensorBoard mirror; not checkpoints,
which can be large and stay behind). The driver writes those files into the sweep directory and
saves `cell.json`, so resume, reports and `stabdiag analyze` of a cell work exactly as for the
local backend. A task that raises marks its cell failed with the reason; a task whose worker or
node dies is retried once by Ray (a lost spot node should not cost a cell), then marked failed.
The rest of the grid goes on. Ctrl-C cancels the outstanding tasks.

A cell asks Ray for one GPU when it trains on CUDA (device=cuda, or auto on a cluster that has
GPUs), and for `cpus_per_cell` CPUs, which is also its torch thread count: the same grid with the
same seeds and threads gives the same numbers here as under the local backend.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from stabdiag.errors import ConfigError, TrainError
from stabdiag.sweep.results import CellResult, failed_cell
from stabdiag.sweep.runner import (
    _DIST_ENV,
    clear_run_dir,
    describe_error,
    save_cell,
    train_cell,
)
from stabdiag.sweep.spec import Cell

EXTRA_HINT = "pip install 'stabdiag[ray]'"
SKIP_DIRS = frozenset({"checkpoints"})
"""Run-directory folders a task does not send back (large, and not needed for the report)."""


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise TrainError(f"--backend ray needs Ray: {EXTRA_HINT}") from None
    return ray


def collect_files(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run directory (relative POSIX path -> bytes), checkpoints left out."""
    out = {}
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if path.is_file() and rel.parts[0] not in SKIP_DIRS:
            out[rel.as_posix()] = path.read_bytes()
    return out


def land_files(run_dir: Path, files: dict[str, bytes]) -> None:
    """Write a task's files under run_dir; refuses paths that would leave it."""
    root = run_dir.resolve()
    for rel, data in files.items():
        target = (run_dir / rel).resolve()
        if root not in target.parents:
            raise TrainError(
                f"{run_dir}: a Ray task sent a file outside the run directory: {rel!r}"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    config = run_dir / "config.json"
    if config.exists():  # the worker trained in a temporary directory; say where the run is now
        try:
            d = json.loads(config.read_text())
            d["out_dir"] = str(run_dir.parent)
            config.write_text(json.dumps(d, indent=2) + "\n")
        except (ValueError, TypeError):
            pass


def _ray_train(cell: Cell, threads: int) -> dict[str, Any]:
    """The task body, on a Ray worker: train in a temp dir, return numbers and files."""
    for key in _DIST_ENV:
        os.environ.pop(key, None)
    import ray
    import torch

    torch.set_num_threads(threads)
    gpus = ray.get_gpu_ids()
    device = f"{socket.gethostname()}/{f'cuda:{gpus[0]}' if gpus else 'cpu'}"
    with tempfile.TemporaryDirectory(prefix="stabdiag-cell-") as tmp:
        local = replace(cell, config=replace(cell.config, out_dir=tmp))
        result = train_cell(local, device=device, save=False)
        if result is None:
            raise TrainError("training was interrupted on the worker")
        files = collect_files(local.run_dir)
    return {"result": result.to_dict(), "files": files}


def _reason(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return describe_error(cause)
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[-1].strip() if lines else 'no message'}"[:500]


@dataclass
class RayBackend:
    """A connection to a Ray cluster (or a local Ray this sweep started) that trains each cell as a
    task and sends its numbers and run files back, so the nodes need no shared filesystem."""

    ray: Any
    address: str | None
    owns: bool
    """True when this sweep started the Ray instance (and so shuts it down)."""
    cpus_per_cell: int
    cluster_cpus: float
    cluster_gpus: float

    @classmethod
    def connect(
        cls, address: str | None, cells: Sequence[Cell], *, cpus_per_cell: int = 1
    ) -> RayBackend:
        ray = _import_ray()
        owns = not ray.is_initialized()
        if owns:
            try:
                ray.init(
                    address=address or None,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level="WARNING",
                )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"at {address}" if address else "(local)"
                raise ConfigError(
                    f"--ray-address: cannot connect to the Ray cluster {where}: "
                    f"{' '.join(str(exc).split())[:300]}"
                ) from None
        res = ray.cluster_resources()
        backend = cls(
            ray, address, owns, cpus_per_cell, float(res.get("CPU", 0)), float(res.get("GPU", 0))
        )
        try:
            backend._check(cells)
        except ConfigError:
            backend.close()
            raise
        return backend

    def _check(self, cells: Sequence[Cell]) -> None:
        wanted = {c.config.device for c in cells}
        if "cuda" in wanted and not self.cluster_gpus:
            raise ConfigError("the cells ask for device=cuda but the Ray cluster has no GPU")
        if self.cpus_per_cell > self.cluster_cpus:
            raise ConfigError(
                f"--cpus-per-cell {self.cpus_per_cell}: the Ray cluster has "
                f"{self.cluster_cpus:g} CPUs"
            )

    def gpus_for(self, cell: Cell) -> int:
        d = cell.config.device
        return 1 if d == "cuda" or (d == "auto" and self.cluster_gpus > 0) else 0

    @property
    def device(self) -> str:
        return "cuda" if self.cluster_gpus else "cpu"

    def describe(self) -> str:
        where = f"the Ray cluster at {self.address}" if self.address else "a local Ray cluster"
        per = f"{'1 GPU + ' if self.cluster_gpus else ''}{self.cpus_per_cell} CPU"
        return (
            f"on {where} ({self.cluster_cpus:g} CPUs, {self.cluster_gpus:g} GPUs; "
            f"one task per cell, {per} each)"
        )

    def close(self) -> None:
        if self.owns and self.ray.is_initialized():
            self.ray.shutdown()

    def land(self, cell: Cell, payload: dict[str, Any]) -> CellResult:
        """A task's answer -> the cell's run directory and `cell.json` on the driver."""
        clear_run_dir(cell.run_dir)
        land_files(cell.run_dir, payload["files"])
        result = replace(CellResult.from_dict(payload["result"]), run_dir=str(cell.run_dir))
        save_cell(cell, result)
        return result

    def run(
        self,
        cells: Sequence[Cell],
        todo: Sequence[int],
        done: Callable[[int, CellResult], None],
        body: Callable[[Cell, int], dict[str, Any]] = _ray_train,
    ) -> None:
        """Submit every cell in `todo` as a task running `body`; `done` gets each result."""
        ray = self.ray
        task = ray.remote(body)
        refs: dict[Any, int] = {}
        try:
            for i in todo:
                opts = task.options(
                    num_cpus=self.cpus_per_cell,
                    num_gpus=self.gpus_for(cells[i]),
                    max_retries=1,
                    retry_exceptions=False,
                )
                refs[opts.remote(cells[i], self.cpus_per_cell)] = i
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                for ref in ready:
                    i = refs.pop(ref)
                    done(i, self._collect(cells[i], ref))
        except KeyboardInterrupt:
            for ref in refs:  # stop the cluster's work too, not only the driver
                with contextlib.suppress(Exception):  # already finished or gone: nothing to stop
                    ray.cancel(ref, force=True)
            raise
        finally:
            self.close()

    def _collect(self, cell: Cell, ref: Any) -> CellResult:
        try:
            payload = self.ray.get(ref)
            return self.land(cell, payload)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - a task error, a dead worker or node: the cell's
            return failed_cell(
                cell.setting, cell.lr, cell.seed, str(cell.run_dir), _reason(exc), device="ray"
            )
