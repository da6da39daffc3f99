"""Where the local backend trains cells: device slots, and which cell goes to which slot. No torch.

A *slot* is one worker process that trains one cell at a time: a CPU slot with its share of the
cores, or a GPU slot pinned to one device through ``CUDA_VISIBLE_DEVICES`` (set in the worker
before torch is imported, so the cell's ``device=cuda`` means exactly that GPU and a cell can never
land on a busy one). Everything here is a pure function of the device list, the core count and
the grid, so the scheduling is tested on machines without GPUs.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from stabdiag import words
from stabdiag.errors import ConfigError

VISIBLE = "CUDA_VISIBLE_DEVICES"
_CUDA = re.compile(r"^cuda:(\d+)$")


@dataclass(frozen=True)
class Slot:
    """One worker: trains one cell at a time on `device` with `threads` CPU threads."""

    device: str
    """'cpu' or 'cuda:N' (N in the sweep process's own numbering of visible GPUs)."""
    threads: int
    env: tuple[tuple[str, str], ...] = ()
    """Environment the worker sets before importing torch."""


@dataclass(frozen=True)
class Plan:
    """Where a sweep's cells train: one slot per concurrent cell (a GPU, a share of one, or CPU
    cores), and whether a single slot trains in the sweep's own process."""

    slots: tuple[Slot, ...]
    in_process: bool
    """One slot that needs no environment of its own: train in the sweep's process, where the
    progress display can follow each step."""

    @property
    def device(self) -> str:
        kinds = sorted({s.device for s in self.slots})
        return ",".join(kinds)

    def describe(self) -> str:
        gpus = [s.device for s in self.slots if s.device != "cpu"]
        if gpus:
            return (
                f"on {', '.join(gpus)} (one cell per GPU at a time)"
                if len(gpus) > 1
                else f"on {gpus[0]}, one cell at a time"
            )
        n, t = len(self.slots), self.slots[0].threads
        if n == 1:
            return f"on cpu, one cell at a time, {words.count(t, 'thread')}"
        return f"on cpu ({n} processes x {words.count(t, 'thread')})"


def parse_devices(text: str, visible_gpus: int) -> tuple[str, ...]:
    """`cuda:0,cuda:1` | `cuda` (every visible GPU) | `cpu` -> device names, in order given.

    A GPU named twice gets two slots (two small cells at once on one big GPU).
    """
    items = [t.strip().lower() for t in text.split(",") if t.strip()]
    if not items:
        raise ConfigError(f"--devices {text!r}: expected cpu, cuda, or cuda:0,cuda:1,...")
    out: list[str] = []
    for item in items:
        if item == "cpu":
            out.append("cpu")
        elif item == "cuda":
            if not visible_gpus:
                raise ConfigError("--devices cuda: no CUDA device is visible to this process")
            out += [f"cuda:{i}" for i in range(visible_gpus)]
        elif m := _CUDA.match(item):
            i = int(m.group(1))
            if i >= visible_gpus:
                seen = f"{visible_gpus} visible" if visible_gpus else "none visible"
                raise ConfigError(f"--devices {text!r}: {item} does not exist ({seen})")
            out.append(item)
        else:
            raise ConfigError(f"--devices {text!r}: expected cpu, cuda or cuda:N; got {item!r}")
    if "cpu" in out and len(set(out)) > 1:
        raise ConfigError(
            f"--devices {text!r}: choose CPU or GPUs, not both (cells on both "
            "would not be comparable)"
        )
    return tuple(out)


def visible_for(index: int, parent_visible: str | None) -> str:
    """The CUDA_VISIBLE_DEVICES value that makes the parent's `cuda:index` a worker's `cuda:0`.

    The parent's numbering is relative to its own CUDA_VISIBLE_DEVICES, if it has one.
    """
    if parent_visible is None or not parent_visible.strip():
        return str(index)
    ids = [p.strip() for p in parent_visible.split(",") if p.strip()]
    return ids[index]


def plan_slots(
    *,
    cell_devices: Iterable[str],
    devices: Sequence[str] | None,
    visible_gpus: int,
    cores: int,
    todo: int,
    jobs: int | None = None,
    cpus_per_cell: int | None = None,
    parent_visible: str | None = None,
) -> Plan:
    """The local backend's workers for this grid.

    GPU: one slot per listed device (default: every visible GPU when the cells ask for cuda, or
    for auto and a GPU is there), at most `jobs` and `todo` of them. CPU: workers x threads <=
    cores, `cpus_per_cell` threads each when given (so a cell's numbers do not depend on the
    machine's core count), else the cores shared out.
    """
    wanted = set(cell_devices)
    if devices is None:
        gpu = "cuda" in wanted or ("auto" in wanted and visible_gpus > 0)
        devices = tuple(f"cuda:{i}" for i in range(visible_gpus)) if gpu else ("cpu",)
        if gpu and not devices:
            raise ConfigError(
                "the cells ask for device=cuda but no CUDA device is visible; "
                "use --set device=cpu or auto"
            )
    on_gpu = devices[0] != "cpu"
    if not on_gpu and "cuda" in wanted:
        raise ConfigError("--devices cpu, but the cells ask for device=cuda")
    if on_gpu and "cpu" in wanted:
        raise ConfigError(f"--devices {','.join(devices)}, but the cells ask for device=cpu")
    cores = max(1, cores)
    todo = max(1, todo)
    if on_gpu:
        chosen = list(devices)[: max(1, min(jobs or len(devices), todo))]
        threads = max(1, cpus_per_cell or cores // len(chosen))
        slots = tuple(
            Slot(d, threads, ((VISIBLE, visible_for(int(d.split(":")[1]), parent_visible)),))
            for d in chosen
        )
        # cuda:0 of this process needs no pinning: train here (live per-step progress).
        return Plan(slots, in_process=len(slots) == 1 and chosen[0] == "cuda:0")
    if cpus_per_cell:
        workers = max(1, min(jobs or cores // cpus_per_cell, todo))
        threads = cpus_per_cell
    else:
        workers = max(1, min(jobs or cores, cores, todo))
        threads = max(1, cores // workers)
    # GPUs hidden: a cell with device=auto must not wander onto one that --devices cpu excluded.
    env = ((VISIBLE, ""),) if visible_gpus and "auto" in wanted else ()
    slots = tuple(Slot("cpu", threads, env) for _ in range(workers))
    return Plan(slots, in_process=workers == 1 and not env)


class Dispatcher:
    """Hands cells to free slots, one cell per slot at a time, in grid order.

    Pure bookkeeping (no processes): the runner asks `start()` for the first assignments and
    `finished(slot)` for the next cell of a slot that just became free.
    """

    def __init__(self, n_slots: int, todo: Sequence[int]) -> None:
        self.queue: deque[int] = deque(todo)
        self.free: deque[int] = deque(range(n_slots))
        self.busy: dict[int, int] = {}

    def _fill(self) -> list[tuple[int, int]]:
        out = []
        while self.free and self.queue:
            slot, cell = self.free.popleft(), self.queue.popleft()
            self.busy[slot] = cell
            out.append((slot, cell))
        return out

    def start(self) -> list[tuple[int, int]]:
        return self._fill()

    def finished(self, slot: int) -> list[tuple[int, int]]:
        """`slot` is done with its cell; returns the new (slot, cell) assignments."""
        if slot not in self.busy:
            raise ValueError(f"slot {slot} has no cell")
        del self.busy[slot]
        self.free.append(slot)
        return self._fill()

    @property
    def done(self) -> bool:
        return not self.queue and not self.busy
