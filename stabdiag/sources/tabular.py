"""Shared by the CSV-like readers: a wide table (step column + one column per metric) -> rows.

Why one place: Lightning's metrics.csv, W&B exports and hand-written CSVs are all the same shape;
only the step-column spelling and extras (rank, run, wall time) differ.
"""

from __future__ import annotations

import re

# Step-column spellings (research/formats.md section 10, "step" row), checked in this order.
STEP_COLUMNS = (
    "step",
    "global_step",
    "trainer/global_step",
    "iteration",
    "iter",
    "_step",
    "num_updates",
    "current_steps",
    "it",
    "batch",
)
WALL_COLUMNS = ("wall_time", "_timestamp", "timestamp")
RANK_COLUMNS = ("rank",)
RUN_COLUMNS = ("run",)
METRIC_COLUMNS = ("metric", "tag", "name", "key")
VALUE_COLUMNS = ("value",)
# W&B panel export: "<run display name> - <metric>" plus "__MIN"/"__MAX" bucket columns.
WANDB_PANEL = re.compile(r"^(?P<run>.+?) - (?P<metric>.+?)(?P<agg>__MIN|__MAX)?$")


def find_column(columns: list[str], candidates: tuple[str, ...]) -> str | None:
    lower = {c.strip().lower(): c for c in columns}
    for cand in candidates:
        if cand in lower:
            return lower[cand]
    return None
