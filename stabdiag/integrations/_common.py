"""What the framework callbacks share: their options, their Monitor, a finding phrased for a logger."""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping
from typing import Any

from stabdiag.findings import Severity
from stabdiag.live.monitor import Monitor
from stabdiag.live.state import Event
from stabdiag.textfmt import at_steps


def log_event(logger: logging.Logger, event: Event, level: Severity) -> None:
    """One line per new or escalated finding; at or above the action level as a warning."""
    f = event.finding
    where = at_steps(f.step_start, f.step_end) or "the whole run"
    verb = "now" if event.change == "escalated" else ""
    text = f"stabdiag: {verb + ' ' if verb else ''}{f.severity.label} {f.kind} ({f.code}) at {where}: {f.message}"
    logger.log(logging.WARNING if f.severity >= level else logging.INFO, text)


class GuardCallback:
    """What every framework callback shares: its options, checked when the callback is built (a
    bad option fails there, not mid-run), and the Monitor it starts with training (reporting and
    writing findings on the one process that writes; the others only act).

    ``action``: ``warn`` (log only), ``stop`` or ``checkpoint`` (save, then stop); ``skip`` is
    for a plain PyTorch loop (``stabdiag.live.Monitor``), which owns its optimizer step.
    ``level``: the lowest severity acted on. ``run``: the run's name in findings (default: from
    the framework). ``findings_dir``: where ``stabdiag_findings.jsonl`` goes (default: the
    framework's output folder). ``check_every``/``budget``: see ``stabdiag.live.Monitor``
    (default: full checks within 0.5 % of the wall time, plus an immediate one when a logged
    value looks like a spike or is NaN/Inf). ``select``/``ignore``/``configs``: which detectors
    run, with which thresholds, as in ``stabdiag analyze``."""

    _framework = "this framework"  # how the refusal of action='skip' names it
    _logger: logging.Logger

    def __init__(
        self,
        *,
        action: str = "warn",
        level: str = "error",
        run: str | None = None,
        findings_dir: str | os.PathLike[str] | None = None,
        check_every: int = 0,
        budget: float = 0.005,
        select: Collection[str] | None = None,
        ignore: Collection[str] | None = None,
        configs: Mapping[str, Any] | None = None,
    ) -> None:
        if action == "skip":
            raise ValueError(
                "action='skip' is for a plain PyTorch loop (stabdiag.live.Monitor); "
                f"use warn, stop or checkpoint with {self._framework}"
            )
        self._opts: dict[str, Any] = dict(
            action=action,
            level=level,
            check_every=check_every,
            budget=budget,
            select=select,
            ignore=ignore,
            configs=configs,
        )
        self._monitor("probe", None)  # bad options fail now, not mid-run
        self._run = run
        self._dir = findings_dir
        self.monitor: Monitor | None = None

    def _monitor(self, run: str, out_dir: str | os.PathLike[str] | None) -> Monitor:
        """A Monitor with this callback's options, its findings logged through the framework."""
        monitor = Monitor(run, out_dir=out_dir, **self._opts)
        monitor.on_finding = lambda e: log_event(self._logger, e, monitor.level)
        return monitor

    def _start(
        self, default_run: str, out_dir: str | os.PathLike[str] | None, *, writer: bool
    ) -> Monitor:
        """The run's Monitor, named ``run`` or else ``default_run``; findings are reported and
        written by the writing process only."""
        self.monitor = self._monitor(self._run or default_run, out_dir if writer else None)
        if not writer:
            self.monitor.on_finding = None
        return self.monitor
