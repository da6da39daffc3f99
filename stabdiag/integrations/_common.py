"""What the framework callbacks share: building the Monitor and phrasing a finding for a logger."""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping
from typing import Any

from stabdiag.findings import Severity
from stabdiag.live.monitor import Monitor
from stabdiag.live.state import Event


def log_event(logger: logging.Logger, event: Event, level: Severity) -> None:
    """One line per new or escalated finding; at or above the action level as a warning."""
    f = event.finding
    where = (
        f"step {f.step_start}"
        if f.step_start == f.step_end
        else f"steps {f.step_start}-{f.step_end}"
    )
    verb = "now" if event.change == "escalated" else ""
    text = f"stabdiag: {verb + ' ' if verb else ''}{f.severity.label} {f.kind} ({f.code}) at {where}: {f.message}"
    logger.log(logging.WARNING if f.severity >= level else logging.INFO, text)


def make_monitor(
    run: str,
    out_dir: str | os.PathLike[str] | None,
    *,
    action: str,
    level: str,
    check_every: int,
    budget: float,
    select: Collection[str] | None,
    ignore: Collection[str] | None,
    configs: Mapping[str, Any] | None,
    logger: logging.Logger,
) -> Monitor:
    monitor = Monitor(
        run,
        action=action,
        level=level,
        out_dir=out_dir,
        check_every=check_every,
        budget=budget,
        select=select,
        ignore=ignore,
        configs=configs,
    )
    monitor.on_finding = lambda e: log_event(logger, e, monitor.level)
    return monitor
