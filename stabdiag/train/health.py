"""The run's health as seen while it trains: the analysis detectors on the metrics so far.

The trainer checks at every checkpoint (before rotating old ones away) and remembers the first
warning-or-worse finding; the last checkpoint strictly before that finding's first step is then
pinned, so `keep_checkpoints` never deletes the last healthy state. No torch here.

Kinds that describe the configuration or the log rather than the model's state (an LR schedule
without warm-up, a restart in the log) do not count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from stabdiag import table as T
from stabdiag.findings import Finding, Severity

WATCHED = (
    T.TRAIN_LOSS,
    T.VAL_LOSS,
    T.GRAD_NORM,
    T.LR,
    T.LOSS_SCALE,
    T.SKIPPED_STEP,
    T.UPDATE_RATIO,
    T.PARAM_NORM,
    T.MAX_ATTN_LOGIT,
    T.OUTPUT_LOGZ,
)
NOT_HEALTH = ("lr-schedule", "restart", "rank-divergence")


@dataclass
class LiveHealth:
    """Rank 0's watched series, appended step by step, and the first trouble found in them."""

    series: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    first: Finding | None = None

    def add(self, step: int, metrics: Mapping[str, float]) -> None:
        for name in WATCHED:
            if name in metrics:
                steps, values = self.series.setdefault(name, ([], []))
                if steps and step <= steps[-1]:  # a rewritten step: the later value wins
                    while steps and steps[-1] >= step:
                        steps.pop()
                        values.pop()
                steps.append(step)
                values.append(float(metrics[name]))

    def add_rows(self, rows: Iterable[list[str]]) -> None:
        """Rows of a tidy metrics.csv (step, metric, value, wall_time[, rank]); rank 0 only."""
        for row in rows:
            if len(row) > 4 and row[4] not in ("", "0"):
                continue
            try:
                self.add(int(row[0]), {row[1]: float(row[2])})
            except (ValueError, IndexError):
                continue

    def check(self) -> Finding | None:
        """The first (lowest-step) warning-or-worse finding so far; sticky once found."""
        if self.first is not None or T.TRAIN_LOSS not in self.series:
            return self.first
        from stabdiag.detectors import run_detectors

        run = T.RunData(
            name="live",
            series={
                name: T.Series(np.asarray(s, dtype=np.int64), np.asarray(v, dtype=np.float64))
                for name, (s, v) in self.series.items()
            },
        )
        findings, _ = run_detectors([run], ignore=NOT_HEALTH)
        bad = [f for f in findings if f.severity >= Severity.WARNING and f.step_start is not None]
        if bad:
            self.first = min(bad, key=lambda f: f.step_start)
        return self.first
