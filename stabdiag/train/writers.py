"""Metric writers: a protocol, TensorBoard, a tidy long CSV, fan-out and a null object.

`metrics.csv` is long and tidy (`step,metric,value,wall_time[,rank]`), the shape our generic CSV
reader and MetricsTable take directly. TensorBoard scalars are written as `simple_value` so
TensorBoard, tbparse and our own reader all read them.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol


class MetricWriter(Protocol):
    """Where the training loop sends each step's metrics (TensorBoard events, the tidy CSV)."""

    def write(
        self, step: int, metrics: Mapping[str, float], wall_time: float, rank: int | None = None
    ) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class NullWriter:
    """Writes nothing (non-zero ranks' TensorBoard, benchmarks)."""

    def write(
        self, step: int, metrics: Mapping[str, float], wall_time: float, rank: int | None = None
    ) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class TidyWriter:
    """Appends to `<run_dir>/metrics.csv`; a resumed run appends to the same file."""

    def __init__(self, path: Path, *, with_rank: bool = False) -> None:
        self.path = Path(path)
        self.with_rank = with_rank
        new = not self.path.exists() or self.path.stat().st_size == 0
        if not new:  # appending (resume, or a branch's copied history): keep the file's columns
            with open(self.path, newline="", encoding="utf-8") as fh:
                has_rank = "rank" in next(csv.reader(fh), [])
            if with_rank and not has_rank:
                from stabdiag.errors import TrainError

                raise TrainError(
                    f"{self.path}: has no rank column; a run with several ranks "
                    "cannot append to it (train it under a new name)"
                )
            self.with_rank = has_rank
        self._file = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self._csv = csv.writer(self._file)
        if new:
            header = ["step", "metric", "value", "wall_time"] + (["rank"] if with_rank else [])
            self._csv.writerow(header)

    def write(
        self, step: int, metrics: Mapping[str, float], wall_time: float, rank: int | None = None
    ) -> None:
        tail = [rank if rank is not None else 0] if self.with_rank else []
        wt = f"{wall_time:.3f}"
        self._csv.writerows([step, name, _fmt(v), wt, *tail] for name, v in metrics.items())

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(float(value))


def truncate_tidy(path: Path, before: int) -> list[list[str]]:
    """Keep only the rows of `metrics.csv` with step < `before` (a resume continues from the
    checkpoint's step: the steps a killed session logged after it would be logged twice).
    Streams the file and replaces it atomically; returns the kept data rows."""
    path = Path(path)
    if not path.exists():
        return []
    kept: list[list[str]] = []
    tmp = path.with_name(path.name + ".tmp")
    with (
        open(path, newline="", encoding="utf-8") as src,
        open(tmp, "w", newline="", encoding="utf-8") as dst,
    ):
        reader, writer = csv.reader(src), csv.writer(dst)
        header = next(reader, None)
        if header is None:
            tmp.unlink()
            return []
        writer.writerow(header)
        for row in reader:
            try:
                if int(row[0]) >= before:
                    continue
            except (ValueError, IndexError):
                continue  # a line torn by a kill: drop it
            writer.writerow(row)
            kept.append(row)
    tmp.replace(path)
    return kept


def rank_tag(name: str, rank: int | None) -> str:
    """The TensorBoard tag of a metric: rank 0 (and single-process runs) under the metric's
    name, rank R under `rankR/<name>`, so ranks never share a tag (one tag holding two ranks'
    values reads back as a run that jumps back and forth between steps)."""
    return name if not rank else f"rank{rank}/{name}"


class TensorBoardWriter:
    """Scalars into `events.out.tfevents.*` in the run directory (one new file per session).

    Under torchrun rank 0 writes every rank's values (gathered), each rank under its own tags
    (`rank_tag`)."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._tb = SummaryWriter(log_dir=str(log_dir), flush_secs=30)

    def write(
        self, step: int, metrics: Mapping[str, float], wall_time: float, rank: int | None = None
    ) -> None:
        for name, value in metrics.items():
            self._tb.add_scalar(
                rank_tag(name, rank), value, step, walltime=wall_time, new_style=False
            )

    def flush(self) -> None:
        self._tb.flush()

    def close(self) -> None:
        self._tb.close()


class MultiWriter:
    """Fans every call out to several writers."""

    def __init__(self, writers: Sequence[MetricWriter]) -> None:
        self.writers = list(writers)

    def write(
        self, step: int, metrics: Mapping[str, float], wall_time: float, rank: int | None = None
    ) -> None:
        for w in self.writers:
            w.write(step, metrics, wall_time, rank)

    def flush(self) -> None:
        for w in self.writers:
            w.flush()

    def close(self) -> None:
        for w in self.writers:
            w.close()
