"""``stabdiag watch``: follow runs that are still being written and report findings as they appear.

The library half (no printing): ``Watcher.poll()`` finds new files under the watched paths,
reads what was appended to each (``follow.Follower``), appends it to its run (``LiveRun``) and
runs the detectors (``Tracker``) on the runs that changed, returning the new or escalated
findings. The CLI decides what to print, when to exit and what to run on a finding.

When to detect: a full check of a run costs time proportional to its length (~1 ms per 100
points on one core), so it runs on a budget (by default at most ``budget`` = 5 % of one core,
averaged since the watch began) plus at once when a newly read loss or grad-norm point looks
like a spike (``SpikeScreen``, O(1) per point) or is NaN/Inf. The cost of a poll therefore
follows the data written since the last one; the budgeted full checks are what keeps a live
verdict identical to ``stabdiag analyze`` of the same files. ``finish()`` reads any last line
without a newline and checks every run once more: that final verdict is the offline one.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stabdiag import table as T
from stabdiag.errors import ConfigError, SourceError
from stabdiag.live.follow import Follower, rewind
from stabdiag.live.state import SCREENED, Event, LiveRun, SpikeScreen, Tracker
from stabdiag.sources import hf_trainer, sniff

# Formats whose name is derived from the file's directory in `analyze` (sources.load naming).
_BY_DIR = frozenset({sniff.TENSORBOARD, sniff.LIGHTNING_CSV, sniff.HF_TRAINER_STATE, sniff.MLFLOW})
_RESNIFF_LIMIT = 50
# New points of a metric in one poll above which a full check is cheaper than screening each.
_BACKLOG = 2048  # polls a growing file of unknown format is sniffed again


@dataclass
class PollResult:
    """What one ``Watcher.poll()`` found: the new or escalated findings, reader warnings, and
    what the poll cost (bytes read, runs checked, seconds), for the CLI and the live benchmark."""

    events: list[Event] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    nbytes: int = 0  # bytes read this poll
    new_files: int = 0
    checked: int = 0  # runs the detectors ran on
    seconds: float = 0.0  # wall time of the poll


class Watcher:
    """Follows every run under ``paths``; see the module docstring."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        *,
        fmt: str | None = None,
        select: Collection[str] | None = None,
        ignore: Collection[str] | None = None,
        configs: Mapping[str, Any] | None = None,
        budget: float = 0.05,
    ) -> None:
        if fmt is not None and fmt not in sniff.FORMATS:
            raise ConfigError(f"unknown format {fmt!r}; expected one of {', '.join(sniff.FORMATS)}")
        self.paths = [Path(p) for p in paths]
        for p in self.paths:
            if not p.exists():
                raise SourceError(p, "a log file or directory to watch", "nothing at that path")
        self.fmt = fmt
        self.budget = budget
        self.tracker = Tracker(select=select, ignore=ignore, configs=configs)
        self.followers: dict[Path, Follower] = {}
        self.runs: dict[str, LiveRun] = {}
        self.screens: dict[str, SpikeScreen] = {}
        self._unknown: dict[Path, tuple[int, int]] = {}  # path -> (size when sniffed, tries)
        self._names: dict[str, str] = {}  # run key -> run name
        self._dirty: set[str] = set()  # runs with data not yet checked
        self._scratch = Path(tempfile.mkdtemp(prefix="stabdiag-watch-"))
        self._t0 = time.perf_counter()
        self.check_seconds = 0.0
        self._last_cost: dict[str, float] = {}
        self.last_data = time.monotonic()  # when new data last arrived
        self._walked_at = -math.inf
        self._walk_cost = 0.0
        self.points = 0

    # ------------------------------------------------------------------ public

    def poll(self, *, final: bool = False) -> PollResult:
        t = time.perf_counter()
        res = PollResult()
        self._discover(res, final)
        urgent: set[str] = set()
        for f in list(self.followers.values()):
            self._read(f, final, res, urgent)
        due = [r for r in self._dirty if final or r in urgent or self._due(r)]
        if due:
            res.events = self._check(due)
            res.checked = len(due)
        if res.nbytes:
            self.last_data = time.monotonic()
        res.seconds = time.perf_counter() - t
        return res

    def finish(self) -> PollResult:
        """Read what is left (a last line without its newline) and check every run once more."""
        self._dirty.update(self.runs)
        return self.poll(final=True)

    def close(self) -> None:
        import shutil

        shutil.rmtree(self._scratch, ignore_errors=True)

    @property
    def findings(self):
        return list(self.tracker.findings)

    @property
    def skipped(self):
        return list(self.tracker.skipped)

    def run_data(self) -> list[T.RunData]:
        return [r.run_data() for r in self.runs.values()]

    # ------------------------------------------------------------------ discovery

    def _discover(self, res: PollResult, final: bool) -> None:
        """New files under the watched paths. Walking a big tree costs, so walks are spaced to
        stay under the budget too (a small tree is walked on every poll)."""
        now = time.perf_counter()
        if not final and now - self._walked_at < self._walk_cost / self.budget:
            return
        self._walked_at = now
        self._discover_now(res)
        self._walk_cost = time.perf_counter() - now

    def _discover_now(self, res: PollResult) -> None:
        for root in self.paths:
            files = [root] if root.is_file() else list(sniff.walk(root)) if root.is_dir() else []
            explicit = root.is_file()
            for p in files:
                if p in self.followers:
                    continue
                fmt = self._sniff(p, explicit, res)
                if fmt is None or self._shadowed(p, fmt):
                    continue
                key, base = self._run_key(p, fmt)
                f = Follower(
                    p, fmt, self._name(key, base, p), self._scratch / str(len(self.followers))
                )
                self.followers[p] = f
                res.new_files += 1

    def _sniff(self, p: Path, explicit: bool, res: PollResult) -> str | None:
        if self.fmt is not None and explicit:
            return self.fmt
        try:
            size = p.stat().st_size
        except OSError:
            return None
        if sniff.is_skipped(p):  # checkpoints and other binaries: never opened
            return None
        seen = self._unknown.get(p)
        if seen is not None and (seen[0] == size or seen[1] >= _RESNIFF_LIMIT):
            return None  # unchanged since it was not recognised (or given up on)
        fmt = sniff.sniff(p) if size else None
        if fmt is not None and self.fmt is not None and fmt not in sniff.FAMILY[self.fmt]:
            fmt = None
        if fmt is None:
            if explicit and size and seen is None:
                res.warnings.append(f"{p}: not a known log format yet; watching it until it is")
            self._unknown[p] = (size, (seen[1] + 1) if seen else 1)
            return None
        self._unknown.pop(p, None)
        return fmt

    def _shadowed(self, p: Path, fmt: str) -> bool:
        """Files `analyze` does not read as a run of their own: the TensorBoard mirror of an HF
        output dir or of a run dir with metrics.csv, and checkpoint copies of trainer_state.json
        (the output dir's group is followed through its newest state)."""
        if fmt == sniff.TENSORBOARD:
            d = p.parent
            if (d / "metrics.csv").is_file():
                return True
            return any(
                (a / "trainer_state.json").is_file()
                or any(a.glob("checkpoint-*/trainer_state.json"))
                for a in (d, *list(d.parents)[:3])
            )
        return False

    def _run_key(self, p: Path, fmt: str) -> tuple[str, str]:
        if fmt == sniff.TENSORBOARD:
            d = p.parent
            if d.name.replace(".", "").isdigit():  # HF's nested <unix_time>/ hparams dir
                d = d.parent
            return f"dir:{d}", d.resolve().name
        if fmt == sniff.HF_TRAINER_STATE:
            d = hf_trainer.output_dir(p)
            return f"dir:{d}", d.resolve().name
        generic = _TEXT_GENERIC if fmt in sniff.TEXT_FORMATS else _GENERIC
        if fmt in _BY_DIR or p.stem.lower() in generic:
            return f"file:{p}", p.resolve().parent.name
        return f"file:{p}", p.stem

    def _name(self, key: str, base: str, p: Path) -> str:
        if key in self._names:
            return self._names[key]
        name, parents = base, list(p.resolve().parents)[1:]
        taken = set(self._names.values())
        while name in taken and parents:
            name = f"{parents.pop(0).name}/{name}"
        if name in taken:
            name = f"{name}#{len(self._names)}"
        self._names[key] = name
        return name

    # ------------------------------------------------------------------ reading and checking

    def _read(self, f: Follower, final: bool, res: PollResult, urgent: set[str]) -> None:
        piece = f.poll(final=final)
        res.warnings += piece.warnings
        res.nbytes += piece.nbytes
        if piece.replace:
            self._restart_run(f)
        for d in piece.data:
            run = self.runs.get(d.name)
            if run is None:
                run = self.runs[d.name] = LiveRun(d.name, meta=d.meta)
                self.screens[d.name] = SpikeScreen()
            before = {m: run.metrics[m].n for m in SCREENED if m in run.metrics}
            run.add_run_data(d)
            self.points += sum(len(s) for s in d.series.values())
            self._dirty.add(d.name)
            if self._spiky(run, before):
                urgent.add(d.name)

    def _restart_run(self, f: Follower) -> None:
        """The file was rewritten: its run is rebuilt from all of its files, read again."""
        mine = (f.name, f.name + "/")
        for name in [n for n in self.runs if n == f.name or n.startswith(mine[1])]:
            del self.runs[name]
        for other in self.followers.values():
            if other is not f and (other.name == f.name or other.name.startswith(mine[1])):
                rewind(other)

    def _spiky(self, run: LiveRun, before: Mapping[str, int]) -> bool:
        """Whether a point just read looks like a spike or is NaN/Inf (every point goes through
        the screen, in order, so that its running state stays right)."""
        screen = self.screens[run.name]
        hit = False
        for m in SCREENED:
            buf = run.metrics.get(m)
            if buf is None:
                continue
            first = before.get(m, 0)
            if buf.n - first > _BACKLOG:  # a backlog: check it whole, screen on from its end
                screen.reseed(buf, m)
                hit = True
                continue
            for i in range(first, buf.n):
                if screen.outlier(buf, m, i) or not math.isfinite(float(buf._values[i])):
                    hit = True
        return hit

    def _due(self, name: str) -> bool:
        elapsed = time.perf_counter() - self._t0
        return self.check_seconds + self._last_cost.get(name, 0.0) <= self.budget * elapsed

    def _check(self, names: Sequence[str]) -> list[Event]:
        t = time.perf_counter()
        events = self.tracker.update([self.runs[n].run_data() for n in names if n in self.runs])
        cost = time.perf_counter() - t
        self.check_seconds += cost
        for n in names:
            self._last_cost[n] = cost / len(names)
            self._dirty.discard(n)
        return events


_GENERIC = frozenset(
    {"metrics", "log", "logs", "history", "progress", "scalars", "train_log", "trainer_log"}
)
_TEXT_GENERIC = frozenset({"main", "log", "stdout", "output", "train", "out", "console"})


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie child counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True
