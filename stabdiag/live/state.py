"""Incremental detection: series that grow point by point, and a tracker of findings over time.

Why not re-read and re-cut the whole table on every update: a MetricsTable cut costs ~30 ms per
100k steps (pandas), paid on every poll of a long run. Here each metric is a growing numpy
buffer (amortised O(new points) to append, views to read), and only the detectors themselves
look at the whole series: they are vectorised (~3 ms per 100k steps for all of them), which is
what keeps a live check cheap while it still sees exactly what ``analyze`` would see.

The live verdict is the offline verdict of the data seen so far: ``Tracker.update`` runs the
same ``run_detectors`` on the same series, and only remembers which findings it has already
announced (same run, kind and metric, overlapping steps) so that each is reported once, and again
only if its severity rises (a spike that has not recovered yet becomes an error).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stabdiag import table as T
from stabdiag.detectors import grad_spike, loss_spike, run_detectors
from stabdiag.findings import Finding, Severity, Skipped


class SeriesBuffer:
    """One metric's points in write order; a later write of a step wins, as in MetricsTable."""

    __slots__ = ("_steps", "_values", "n", "_ordered", "max_step")

    def __init__(self, capacity: int = 256) -> None:
        self._steps = np.empty(capacity, dtype=np.int64)
        self._values = np.empty(capacity, dtype=np.float64)
        self.n = 0
        self._ordered = True  # steps strictly increasing so far: the buffer is already a Series
        self.max_step: int | None = None

    def extend(
        self, steps: np.ndarray | Sequence[int], values: np.ndarray | Sequence[float]
    ) -> None:
        steps = np.asarray(steps, dtype=np.int64)
        values = np.asarray(values, dtype=np.float64)
        k = len(steps)
        if not k:
            return
        if self.n + k > len(self._steps):
            cap = max(2 * len(self._steps), self.n + k)
            self._steps = np.concatenate([self._steps[: self.n], np.empty(cap - self.n, np.int64)])
            self._values = np.concatenate([self._values[: self.n], np.empty(cap - self.n)])
        if self._ordered and (
            (self.n and steps[0] <= self._steps[self.n - 1])
            or (k > 1 and bool((steps[1:] <= steps[:-1]).any()))
        ):
            self._ordered = False
        self._steps[self.n : self.n + k] = steps
        self._values[self.n : self.n + k] = values
        self.n += k
        top = int(steps[-1]) if self._ordered else int(steps.max())
        self.max_step = top if self.max_step is None else max(self.max_step, top)

    def append(self, step: int, value: float) -> None:
        """One point, without building arrays (the in-loop path: a few microseconds)."""
        if self.n == len(self._steps):
            self.extend(np.array([step], np.int64), np.array([value], np.float64))
            return
        if self._ordered and self.n and step <= self.max_step:
            self._ordered = False
        self._steps[self.n] = step
        self._values[self.n] = value
        self.n += 1
        if self.max_step is None or step > self.max_step:
            self.max_step = step

    def last(self) -> tuple[int, float] | None:
        return (int(self._steps[self.n - 1]), float(self._values[self.n - 1])) if self.n else None

    def series(self) -> T.Series:
        """The points as a Series (steps ascending and unique, the last write of a step wins)."""
        if not self._ordered:
            s, v = self._steps[: self.n], self._values[: self.n]
            order = np.argsort(s, kind="stable")
            s, v = s[order], v[order]
            keep = np.ones(len(s), dtype=bool)
            keep[:-1] = s[1:] != s[:-1]
            s, v = s[keep], v[keep]
            # Compact once into new arrays (views handed out earlier stay valid): from now on the
            # buffer is ordered again and later writes still win.
            self.n = len(s)
            cap = max(256, 2 * self.n)
            self._steps = np.concatenate([s, np.empty(cap - self.n, np.int64)])
            self._values = np.concatenate([v, np.empty(cap - self.n)])
            self._ordered = True
        return T.Series(self._steps[: self.n], self._values[: self.n])

    def tail(self, points: int) -> T.Series:
        s = self.series()
        return T.Series(s.steps[-points:], s.values[-points:])


class LiveRun:
    """A run whose metrics arrive over time: per-metric buffers (and per-rank ones) -> RunData."""

    def __init__(self, name: str, meta: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self.meta = dict(meta or {})
        self.metrics: dict[str, SeriesBuffer] = {}
        self.ranks: dict[str, dict[int, SeriesBuffer]] = {}
        self.points = 0

    def buffer(self, metric: str) -> SeriesBuffer:
        buf = self.metrics.get(metric)
        if buf is None:
            buf = self.metrics[metric] = SeriesBuffer()
        return buf

    def add_point(self, metric: str, step: int, value: float) -> None:
        self.buffer(metric).append(step, value)
        self.points += 1

    def add(
        self, metric: str, steps: np.ndarray | Sequence[int], values: np.ndarray | Sequence[float]
    ) -> None:
        self.buffer(metric).extend(steps, values)
        self.points += len(steps)

    def add_rank(self, metric: str, rank: int, steps: np.ndarray, values: np.ndarray) -> None:
        per = self.ranks.setdefault(metric, {})
        buf = per.get(rank)
        if buf is None:
            buf = per[rank] = SeriesBuffer()
        buf.extend(steps, values)

    def add_run_data(self, data: T.RunData) -> None:
        """Append a piece of a run (e.g. the rows newly written to its log), mark rewinds.

        A rewind between pieces (the piece's first step of a per-step training metric is at or
        below what that metric already reached) becomes a ``meta/restart`` point, as the reader
        layer marks one inside a file."""
        rewind: tuple[int, int] | None = None
        for metric, s in data.series.items():
            if not len(s):
                continue
            buf = self.metrics.get(metric)
            if (
                metric != T.RESTART
                and T.is_canonical(metric)
                and buf is not None
                and buf.n
                and buf.max_step is not None
                and int(s.steps[0]) <= buf.last()[0]
            ):
                top = max(b.max_step or 0 for b in self.metrics.values())
                rewind = (
                    (int(s.steps[0]), top)
                    if rewind is None
                    else (min(rewind[0], int(s.steps[0])), top)
                )
        if rewind is not None and T.RESTART not in data.series:
            self.add(T.RESTART, [rewind[0]], [float(rewind[1])])
        for metric, s in data.series.items():
            self.add(metric, s.steps, s.values)
        for metric, per in data.by_rank.items():
            for rank, s in per.items():
                self.add_rank(metric, rank, s.steps, s.values)

    def run_data(self) -> T.RunData:
        series = {m: b.series() for m, b in self.metrics.items() if b.n}
        by_rank = {
            m: {r: b.series() for r, b in per.items() if b.n} for m, per in self.ranks.items()
        }
        return T.RunData(name=self.name, series=series, by_rank=by_rank, meta=self.meta)


@dataclass(frozen=True)
class Event:
    """A finding as the live check first saw it (``new``) or saw it get worse (``escalated``)."""

    finding: Finding
    change: str  # "new" | "escalated"

    def to_dict(self) -> dict[str, Any]:
        return {**self.finding.to_dict(), "change": self.change}


def _span(f: Finding) -> tuple[float, float]:
    lo = -math.inf if f.step_start is None else f.step_start
    hi = math.inf if f.step_end is None else f.step_end
    return lo, max(lo, hi)


class Tracker:
    """Runs the registered detectors on the data so far and reports what is new since last time.

    ``findings``/``skipped`` always hold the verdict of the latest update, i.e. exactly what
    ``run_detectors`` says about the same series offline."""

    def __init__(
        self,
        *,
        select: Collection[str] | None = None,
        ignore: Collection[str] | None = None,
        configs: Mapping[str, Any] | None = None,
    ) -> None:
        self.select, self.ignore, self.configs = select, ignore, configs
        self.findings: list[Finding] = []
        self.skipped: list[Skipped] = []
        # (run, kind, metric) -> [lo, hi, severity] of each finding announced so far
        self._seen: dict[tuple[str, str, str], list[list[Any]]] = {}
        self._skipped_by_run: dict[str, list[Skipped]] = {}
        self._findings_by_run: dict[str, list[Finding]] = {}
        self._order: list[str] = []

    def update(self, runs: Iterable[T.RunData]) -> list[Event]:
        """Detect on ``runs`` (the runs that changed; others keep their last verdict)."""
        runs = list(runs)
        if not runs:
            return []
        found, skipped = run_detectors(
            runs, select=self.select, ignore=self.ignore, configs=self.configs
        )
        for r in runs:
            if r.name not in self._findings_by_run:
                self._order.append(r.name)
            self._findings_by_run[r.name] = []
            self._skipped_by_run[r.name] = []
        for s in skipped:
            self._skipped_by_run[s.run].append(s)
        events: list[Event] = []
        for f in found:
            self._findings_by_run[f.run].append(f)
            change = self._announce(f)
            if change is not None:
                events.append(Event(f, change))
        self.findings = [f for r in self._order for f in self._findings_by_run[r]]
        self.skipped = [s for r in self._order for s in self._skipped_by_run[r]]
        return events

    def _announce(self, f: Finding) -> str | None:
        """ "new", "escalated" or None (already announced at this severity or higher).

        A finding is the one announced before when it is of the same run, kind and metric and
        its steps overlap that one's last known steps: evidence, end and sometimes the start
        move as data arrives (a divergence's onset is re-estimated), the event stays the same."""
        lo, hi = _span(f)
        known = self._seen.setdefault((f.run, f.kind, f.metric), [])
        for ent in known:
            if lo <= ent[1] and ent[0] <= hi:
                ent[0], ent[1] = lo, hi
                if f.severity > ent[2]:
                    ent[2] = f.severity
                    return "escalated"
                return None
        known.append([lo, hi, f.severity])
        return "new"

    def worst(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)


_SCREEN_POINTS = 8
# Screen ratios below the finders' min_ratio (1.2 loss, 3 grad norm): the corrected baseline can
# sit a little under the recent minimum on a falling curve.
_LOG_RATIO = {T.TRAIN_LOSS: math.log(1.15), T.GRAD_NORM: math.log(2.0)}
# The grad-norm outlier rule of grad-spike (its thresholds), applied with loss-spike's event finder
# to the newest point: grad-spike itself waits for the next point to call a spike isolated.
_GRAD_EVENTS = loss_spike.Config(
    level_window=grad_spike.DEFAULT.level_window,
    window=grad_spike.DEFAULT.window,
    min_history=grad_spike.DEFAULT.min_history,
    z_threshold=grad_spike.DEFAULT.z_threshold,
    sigma_floor=grad_spike.DEFAULT.sigma_floor,
    min_ratio=grad_spike.DEFAULT.min_ratio,
)
SCREENED = (T.TRAIN_LOSS, T.GRAD_NORM)


class _Track:
    """A screened metric's recent values and noise, kept in plain Python (a few points per call)."""

    __slots__ = ("recent", "diffs", "last_pos", "sigma", "count")

    def __init__(self) -> None:
        self.recent: deque[float] = deque(maxlen=_SCREEN_POINTS)
        self.diffs: deque[float] = deque(maxlen=128)
        self.last_pos: float | None = None
        self.sigma = 0.0
        self.count = 0


class SpikeScreen:
    """Is a just-written loss or grad-norm point the start (or still-open part) of a spike?

    Used to check at once instead of waiting for the budgeted schedule, and by ``skip``. Points
    are fed in write order. An O(1) screen first: on log scale, >= max(log(ratio), 5 sigma) above
    the lowest of the previous 8 finite points (the finders need >= 7 sigma and >= min_ratio above
    a baseline near that level), sigma being the robust point-to-point noise of the last 128
    points (re-estimated every 32). Only when it fires, loss-spike's event finder on the trailing
    ``window`` points (~1 ms) decides."""

    def __init__(self, window: int = 256) -> None:
        self.window = window
        self._tracks: dict[str, _Track] = {}

    def outlier(self, buf: SeriesBuffer, metric: str, i: int | None = None) -> bool:
        """Point ``i`` of ``buf`` in write order (default: the newest), judged on the points up
        to it. Call it once per point, in order."""
        n = buf.n if i is None else i + 1
        if not self._screen(metric, float(buf._values[n - 1])):
            return False
        cfg = loss_spike.DEFAULT if metric == T.TRAIN_LOSS else _GRAD_EVENTS
        if n <= cfg.min_history:
            return False
        vals = buf._values[max(0, n - self.window) : n]
        last = len(vals) - 1
        return any(ev.onset <= last <= ev.end for ev in loss_spike.find_events(vals.copy(), cfg))

    def reseed(self, buf: SeriesBuffer, metric: str) -> None:
        """Restart the screen's state from the buffer's last points (after a backlog was read
        without screening it point by point: a full check judges a backlog anyway)."""
        self._tracks[metric] = _Track()
        for x in buf._values[max(0, buf.n - 129) : buf.n].tolist():
            self._screen(metric, x)

    def _screen(self, metric: str, x: float) -> bool:
        tr = self._tracks.get(metric)
        if tr is None:
            tr = self._tracks[metric] = _Track()
        if not math.isfinite(x):
            return False
        fire = False
        if tr.recent:
            low = min(tr.recent)
            if low <= 0 or x <= 0:  # not on a log scale: a new high over the recent points
                fire = x > max(tr.recent)
            else:
                rise = math.log(x) - math.log(low)
                fire = rise >= max(_LOG_RATIO[metric], 5 * tr.sigma)
        if x > 0:
            if tr.last_pos is not None:
                tr.diffs.append(abs(math.log(x) - math.log(tr.last_pos)))
            tr.last_pos = x
        tr.recent.append(x)
        tr.count += 1
        if tr.count % 32 == 1 and tr.diffs:
            tr.sigma = 1.4826 * statistics.median(tr.diffs) / math.sqrt(2)
        return fire
