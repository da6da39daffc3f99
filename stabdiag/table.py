"""The one tidy long table every reader produces and every detector reads.

Columns: ``run, step, metric, value, wall_time, source`` plus ``rank`` when a log has several
ranks. Row order is write order: when a step repeats (a resumed run rewrites steps), the row
written later wins. Non-finite values are kept (a NaN loss is evidence); absent values are
simply not rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

# Canonical metric names (DESIGN.md). Every external spelling maps to these in sources/aliases.py.
TRAIN_LOSS = "train/loss"
VAL_LOSS = "val/loss"
GRAD_NORM = "train/grad_norm"
GRAD_NORM_PREFIX = "train/grad_norm/"
LR = "train/lr"
LOSS_SCALE = "train/loss_scale"
SKIPPED_STEP = "train/skipped_step"
UPDATE_RATIO = "train/update_ratio"
PARAM_NORM = "train/param_norm"
MAX_ATTN_LOGIT = "train/max_attn_logit"
OUTPUT_LOGZ = "train/output_logz"
ACT_RMS_PREFIX = "train/act_rms/"
TOKENS_PER_S = "train/tokens_per_s"
# Written by the reader layer, not by trainers: at step S the run resumed from an earlier step;
# value = the highest step logged before the rewind.
RESTART = "meta/restart"

CANONICAL = (
    TRAIN_LOSS,
    VAL_LOSS,
    GRAD_NORM,
    LR,
    LOSS_SCALE,
    SKIPPED_STEP,
    UPDATE_RATIO,
    PARAM_NORM,
    MAX_ATTN_LOGIT,
    OUTPUT_LOGZ,
    TOKENS_PER_S,
    RESTART,
)
CANONICAL_PREFIXES = (GRAD_NORM_PREFIX, ACT_RMS_PREFIX)

COLUMNS = ("run", "step", "metric", "value", "wall_time", "source")


def is_canonical(metric: str) -> bool:
    return metric in CANONICAL or metric.startswith(CANONICAL_PREFIXES)


@dataclass(frozen=True)
class Series:
    """One metric of one run: steps ascending and unique, values float64 (NaN/Inf kept)."""

    steps: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def finite(self) -> Series:
        ok = np.isfinite(self.values)
        return Series(self.steps[ok], self.values[ok])


@dataclass(frozen=True)
class RunData:
    """Everything detectors may look at for one run: its series by metric and per-rank series."""

    name: str
    series: Mapping[str, Series]
    by_rank: Mapping[str, Mapping[int, Series]] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)

    def get(self, metric: str) -> Series | None:
        s = self.series.get(metric)
        return s if s is not None and len(s) else None

    def with_prefix(self, prefix: str) -> dict[str, Series]:
        return {k: v for k, v in self.series.items() if k.startswith(prefix) and len(v)}


def _to_series(steps: np.ndarray, values: np.ndarray) -> Series:
    # Stable sort keeps write order among equal steps; keep the last written of each step.
    order = np.argsort(steps, kind="stable")
    s, v = steps[order], values[order]
    if len(s) > 1:
        last = np.ones(len(s), dtype=bool)
        last[:-1] = s[1:] != s[:-1]
        s, v = s[last], v[last]
    return Series(s.astype(np.int64, copy=False), v.astype(np.float64, copy=False))


def _split_metrics(f: pd.DataFrame) -> dict[str, Series]:
    """``{str(m): series of g for m, g in f.groupby("metric", sort=False)}``, without copying
    every column of the frame into group order (only step and value are gathered)."""
    codes, names = pd.factorize(f["metric"], sort=False)  # first-seen order; NaN -> -1
    return split_codes(codes, names, f["step"].to_numpy(), f["value"].to_numpy())


class MetricsTable:
    """A validated long DataFrame with helpers to cut it into per-run, per-metric series."""

    def __init__(self, frame: pd.DataFrame) -> None:
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"MetricsTable is missing columns {missing}")
        self.frame = frame.reset_index(drop=True)

    @classmethod
    def empty(cls) -> MetricsTable:
        return cls(pd.DataFrame({c: pd.Series(dtype=_DTYPES[c]) for c in COLUMNS}))

    @classmethod
    def from_records(
        cls,
        run: str,
        steps: Iterable[int] | np.ndarray,
        metrics: Iterable[str] | np.ndarray,
        values: Iterable[float] | np.ndarray,
        *,
        source: str,
        wall_time: Iterable[float] | np.ndarray | None = None,
        rank: Iterable[int] | np.ndarray | None = None,
    ) -> MetricsTable:
        steps = np.asarray(steps, dtype=np.int64)
        data: dict[str, Any] = {
            "run": run,
            "step": steps,
            "metric": np.asarray(metrics, dtype=object),
            "value": np.asarray(values, dtype=np.float64),
            "wall_time": (
                np.full(len(steps), np.nan)
                if wall_time is None
                else np.asarray(wall_time, dtype=np.float64)
            ),
            "source": source,
        }
        if rank is not None:
            data["rank"] = np.asarray(rank, dtype=np.int64)
        return cls(pd.DataFrame(data))

    @classmethod
    def concat(cls, tables: Iterable[MetricsTable]) -> MetricsTable:
        frames = [t.frame for t in tables if len(t.frame)]
        if not frames:
            return cls.empty()
        return cls(pd.concat(_same_categories(frames), ignore_index=True))

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def has_ranks(self) -> bool:
        return "rank" in self.frame.columns and self.frame["rank"].notna().any()

    def runs(self) -> list[str]:
        return list(dict.fromkeys(self.frame["run"].tolist()))

    def metrics(self, run: str | None = None) -> list[str]:
        f = self.frame if run is None else self.frame[self.frame["run"] == run]
        return list(dict.fromkeys(f["metric"].tolist()))

    def series(self, run: str, metric: str) -> Series:
        f = self.frame
        sel = f[(f["run"] == run) & (f["metric"] == metric)]
        if self.has_ranks and sel["rank"].notna().any():
            sel = sel[sel["rank"] == sel["rank"].min()]
        return _to_series(sel["step"].to_numpy(), sel["value"].to_numpy())

    def run_data(self, run: str, meta: Mapping[str, Any] | None = None) -> RunData:
        """Cut one run into series (lowest rank as the run's view) and per-rank series."""
        mine = self.frame["run"] == run
        f = self.frame if mine.all() else self.frame[mine]  # one run: no copy of the table
        by_rank: dict[str, dict[int, Series]] = {}
        if self.has_ranks and f["rank"].notna().any():
            ranked = f[f["rank"].notna()]
            for (metric, rank), g in ranked.groupby(["metric", "rank"], sort=False):
                by_rank.setdefault(metric, {})[int(rank)] = _to_series(
                    g["step"].to_numpy(), g["value"].to_numpy()
                )
            low = ranked.groupby("metric")["rank"].transform("min")
            f = pd.concat([f[f["rank"].isna()], ranked[ranked["rank"] == low]])
        series = _split_metrics(f)
        return RunData(name=run, series=series, by_rank=by_rank, meta=dict(meta or {}))


# Up to this many rows a run is split with a mask per metric (cheap for a few metrics); beyond,
# with one sort of all rows (a mask per metric would cost rows x metrics).
SPLIT_SMALL = 2048


def split_codes(
    codes: np.ndarray, names: Any, steps: np.ndarray, values: np.ndarray
) -> dict[str, Series]:
    """One run's series by metric, for rows whose metric is ``names[codes]`` (code -1: no
    metric): steps ascending and unique (the row written later wins a repeated step), metrics in
    the order of their first row. A mask per metric for small runs, else one stable sort by
    (metric, step) for all series of the run.

    Cutting a run through pandas (a mask, a factorize, a frame per run) cost ~0.4 ms, most of the
    analysis of a 20-point run; on 100,000 small runs that was 40 s (issue 13 R4)."""
    codes = np.asarray(codes)
    if not len(codes):
        return {}
    if len(codes) <= SPLIT_SMALL:  # a mask per metric, no sort when its steps already ascend
        out: dict[str, Series] = {}
        for k in dict.fromkeys(codes.tolist()):
            if k < 0:
                continue
            idx = np.flatnonzero(codes == k)
            s = steps[idx]
            if len(s) < 2 or bool((s[1:] > s[:-1]).all()):
                out[str(names[k])] = Series(
                    s.astype(np.int64, copy=False), values[idx].astype(np.float64, copy=False)
                )
            else:
                out[str(names[k])] = _to_series(s, values[idx])
        return out
    order = np.lexsort((steps, codes))  # stable: equal (metric, step) keep write order
    c, s, v = codes[order], steps[order], values[order]
    # the last written row of each (metric, step), and where each metric's rows start
    last = np.ones(len(c), dtype=bool)
    last[:-1] = (c[1:] != c[:-1]) | (s[1:] != s[:-1])
    c, s, v = c[last], s[last].astype(np.int64, copy=False), v[last].astype(np.float64, copy=False)
    starts = np.flatnonzero(np.concatenate(([True], c[1:] != c[:-1])))
    ends = np.append(starts[1:], len(c))
    first_row = np.unique(codes, return_index=True)[1]  # per metric code ascending
    out = {}
    for k in np.argsort(first_row, kind="stable"):  # metrics in first-seen order
        a, b = int(starts[k]), int(ends[k])
        if c[a] >= 0:
            out[str(names[c[a]])] = Series(s[a:b], v[a:b])
    return out


@dataclass(frozen=True)
class RowRange:
    """One run's rows of a big table as plain column arrays (a contiguous row range): cut into a
    RunData without building a DataFrame per run. ``run_data`` gives what ``MetricsTable.run_data``
    gives for the same rows; runs with ranks take that pandas path."""

    table: MetricsTable
    start: int
    stop: int
    codes: np.ndarray  # metric category codes of these rows
    names: Any  # the metric categories
    steps: np.ndarray
    values: np.ndarray
    ranked: bool

    @property
    def frame(self) -> pd.DataFrame:
        return self.table.frame.iloc[self.start : self.stop]

    def __len__(self) -> int:
        return self.stop - self.start

    def run_data(self, run: str, meta: Mapping[str, Any] | None = None) -> RunData:
        if self.ranked:
            return MetricsTable(self.frame).run_data(run, meta)
        series = split_codes(self.codes, self.names, self.steps, self.values)
        return RunData(name=run, series=series, by_rank={}, meta=dict(meta or {}))


def row_ranges(table: MetricsTable, bounds: Sequence[tuple[int, int]]) -> list[RowRange]:
    """Each (start, stop) of ``table`` as a RowRange (the table's metric column is categorical,
    as ``sources.load`` builds it; other tables go through pandas codes once)."""
    f = table.frame
    metric = f["metric"]
    if isinstance(metric.dtype, pd.CategoricalDtype):
        codes, names = metric.cat.codes.to_numpy(), metric.cat.categories.to_numpy(dtype=object)
    else:
        codes, names = pd.factorize(metric, sort=False)
    steps, values = f["step"].to_numpy(), f["value"].to_numpy()
    rank = f["rank"].to_numpy(dtype=np.float64) if "rank" in f.columns else None
    return [
        RowRange(
            table,
            a,
            b,
            codes[a:b],
            names,
            steps[a:b],
            values[a:b],
            rank is not None and not bool(np.isnan(rank[a:b]).all()),
        )
        for a, b in bounds
    ]


NAME_COLUMNS = ("run", "metric", "source")


def code_dtype(n: int) -> type:
    """The integer type pandas keeps the codes of ``n`` categories in."""
    return np.int8 if n < 2**7 else np.int16 if n < 2**15 else np.int32


def _same_categories(frames: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """Give categorical name columns one set of categories across frames: pd.concat turns
    differing categories into strings (a copy of every name in every row, issue 13 R3)."""
    if len(frames) < 2:
        return frames
    for col in NAME_COLUMNS:
        if not all(isinstance(f[col].dtype, pd.CategoricalDtype) for f in frames):
            continue
        union = pd.unique(
            np.concatenate([f[col].cat.categories.to_numpy(dtype=object) for f in frames])
        )
        frames = [f.assign(**{col: f[col].cat.set_categories(union)}) for f in frames]
    return frames


_DTYPES = {
    "run": object,
    "step": np.int64,
    "metric": object,
    "value": np.float64,
    "wall_time": np.float64,
    "source": object,
}
