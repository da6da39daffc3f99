"""``Monitor``: the in-loop guard for a plain PyTorch loop (and the engine of the framework callbacks).

    monitor = stabdiag.live.Monitor(action="skip", out_dir="runs/x")
    for step, batch in enumerate(loader):
        loss = model(batch); loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if monitor.log(step, loss=loss.item(), grad_norm=gn.item(), lr=sched.get_last_lr()[0]).skip:
            opt.zero_grad(); continue
        opt.step(); opt.zero_grad()
        if monitor.should_stop: break
    monitor.close()

Why it is built this way:

- The verdict must be the offline verdict. Findings come from the registered detectors run on
  everything logged so far (``Tracker``), so ``stabdiag analyze`` of the same numbers agrees.
- It must be cheap. The full check runs on a time budget (by default at most ``budget`` = 0.5 %
  of the training thread's CPU time since the first log, measured), or every ``check_every`` logged points when
  set; a non-finite loss or grad norm forces a check at once. Values passed as tensors are kept
  as tensors and moved to the host together at the next check (one sync per check, never one
  per step); only ``action="skip"`` needs this step's value now, and reads it.
- ``skip`` follows OLMo-core's SkipStepOptimizer idea (skip the update when this step's loss or
  grad norm is an outlier against its recent history), judged by the loss-spike and grad-spike
  detectors on the trailing ``skip_window`` points, with a cap (``max_skips``) on consecutive
  skips: a loss that stays up is a real shift, not a bad batch, and skipping would freeze the run.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stabdiag import table as T
from stabdiag.errors import ConfigError
from stabdiag.findings import Finding, Severity
from stabdiag.live.state import SCREENED, Event, LiveRun, SpikeScreen, Tracker

ACTIONS = ("warn", "stop", "checkpoint", "skip")
FINDINGS_FILE = "stabdiag_findings.jsonl"

# Keyword names of Monitor.log -> canonical metrics (DESIGN.md).
# A full check of a short run costs ~10 ms (the detectors' fixed costs): the first scheduled one
# waits until that fits in the budget instead of running at the first logged point.
FIRST_CHECK_GUESS = 0.01


def _clock() -> float:
    """CPU time of the calling (training) thread: the budget is a share of what the loop itself
    spends, which a busy shared machine does not inflate the way it inflates wall time. (Not the
    process's CPU time: with the many threads of a framework, reading that costs ~50 us.)"""
    return time.thread_time()


KEYWORDS = {
    "loss": T.TRAIN_LOSS,
    "grad_norm": T.GRAD_NORM,
    "lr": T.LR,
    "loss_scale": T.LOSS_SCALE,
    "skipped": T.SKIPPED_STEP,
    "val_loss": T.VAL_LOSS,
    "update_ratio": T.UPDATE_RATIO,
    "param_norm": T.PARAM_NORM,
    "max_attn_logit": T.MAX_ATTN_LOGIT,
    "output_logz": T.OUTPUT_LOGZ,
}


# The grad-norm outlier rule of grad-spike (its thresholds), applied with loss-spike's event finder
# to the newest point: grad-spike itself waits for the next point to call a spike isolated.
@dataclass(frozen=True)
class Verdict:
    """What the loop should do after ``Monitor.log``: skip this optimizer step, stop, or go on."""

    step: int
    skip: bool = False
    stop: bool = False
    events: tuple[Event, ...] = ()

    @property
    def findings(self) -> tuple[Finding, ...]:
        return tuple(e.finding for e in self.events)


class Monitor:
    """Collects one run's metrics, runs the detectors incrementally and acts on findings.

    ``level``: findings at or above it trigger the action (and are logged as warnings; lower
    ones at info). ``action``: ``warn`` (log only), ``stop`` (``should_stop`` becomes true),
    ``checkpoint`` (the same, and the callbacks save first), ``skip`` (``Verdict.skip`` for
    outlier steps; findings at ``level`` are then only logged). ``out_dir``: findings are appended
    to ``out_dir/stabdiag_findings.jsonl`` as they appear. ``on_finding(event)`` is called for
    each new or escalated finding (the callbacks route it to their framework's logger)."""

    def __init__(
        self,
        run: str = "train",
        *,
        action: str = "warn",
        level: str | Severity = "error",
        out_dir: str | os.PathLike[str] | None = None,
        check_every: int = 0,
        budget: float = 0.005,
        skip_window: int = 256,
        max_skips: int = 3,
        select: Collection[str] | None = None,
        ignore: Collection[str] | None = None,
        configs: Mapping[str, Any] | None = None,
        on_finding: Callable[[Event], None] | None = None,
    ) -> None:
        if action not in ACTIONS:
            raise ConfigError(f"action {action!r}: expected one of {', '.join(ACTIONS)}")
        try:
            self.level = level if isinstance(level, Severity) else Severity.parse(level)
        except ValueError as e:
            raise ConfigError(f"level: {e}") from None
        if check_every < 0 or not 0 < budget <= 1 or max_skips < 0 or skip_window < 16:
            raise ConfigError(
                "check_every >= 0, 0 < budget <= 1, max_skips >= 0 and skip_window >= 16 expected"
            )
        self.action = action
        self.run = LiveRun(run)
        self.tracker = Tracker(select=select, ignore=ignore, configs=configs)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.check_every = check_every
        self.budget = budget
        self.skip_window = skip_window
        self.max_skips = max_skips
        self.on_finding = on_finding
        self.should_stop = False
        self.stop_step: int | None = None
        self.stop_finding: Finding | None = None
        self.skipped_steps: list[int] = []
        self.checks = 0
        self.check_seconds = 0.0
        self._consecutive_skips = 0
        self._spikes = SpikeScreen(skip_window)
        self._pending: list[tuple[int, str, Any]] = []  # (step, metric, tensor) not yet on the host
        self._since_check = 0
        self._t0: float | None = None  # set at the first log, in the thread that trains
        self._last_cost = FIRST_CHECK_GUESS  # a check's cost before one was measured
        self._closed = False
        self._urgent = 0

    # ------------------------------------------------------------------ logging

    def log(self, step: int, *, metrics: Mapping[str, Any] | None = None, **values: Any) -> Verdict:
        """Record this step's values (floats or 0-d tensors; None = not logged) and decide.

        Keywords: loss, grad_norm, lr, loss_scale, skipped, val_loss, update_ratio, param_norm,
        max_attn_logit, output_logz; ``metrics`` takes any other names (canonical or not)."""
        step = int(step)
        urgent = False
        for k, v in values.items():
            metric = KEYWORDS.get(k)
            if metric is None:
                raise ConfigError(
                    f"Monitor.log: unknown keyword {k!r}; expected one of "
                    f"{', '.join(KEYWORDS)} (other names go in metrics={{...}})"
                )
            if v is not None and self._add(step, metric, v):
                urgent = True
        if metrics:
            for metric, v in metrics.items():
                if v is not None and self._add(step, metric, v):
                    urgent = True
        now_needed = self.action == "skip"
        self._since_check += 1
        skip = self._skip_decision(step, urgent) if now_needed else False
        events: list[Event] = []
        if (urgent and self._urgent_allowed()) or self._due():
            events = self._check(step)
        return Verdict(step=step, skip=skip, stop=self.should_stop, events=tuple(events))

    def log_series(self, metric: str, steps: Sequence[int], values: Sequence[Any]) -> Verdict:
        """Record many points of one metric at once (floats, or 0-d tensors moved to the host in
        one transfer), e.g. what a callback collected over a logging interval, then decide as
        ``log`` does. Much cheaper per point than ``log``: one vectorised append, then only the
        spike screen runs per point."""
        if not len(steps):
            return Verdict(step=-1, stop=self.should_stop)
        vals = _host_values(values)
        buf = self.run.buffer(metric)
        first = buf.n
        self.run.add(metric, steps, vals)
        urgent = False
        if metric in SCREENED:
            for i in range(first, buf.n):
                if self._spikes.outlier(buf, metric, i) or not math.isfinite(buf._values[i]):
                    urgent = True
        self._since_check += len(steps)
        step = int(steps[-1])
        events: list[Event] = []
        if (urgent and self._urgent_allowed()) or self._due():
            events = self._check(step)
        return Verdict(step=step, stop=self.should_stop, events=tuple(events))

    def _add(self, step: int, metric: str, v: Any) -> bool:
        """Record one value; True when it looks like a spike or is NaN/Inf (check now)."""
        if type(v) is float:  # the common case first: a host float
            x = v
        elif self.action != "skip" and _is_tensor(v):
            self._pending.append((step, metric, v))  # detached when moved to the host
            return False
        else:
            x = _to_float(v)
        self.run.add_point(metric, step, x)
        if metric is T.TRAIN_LOSS or metric is T.GRAD_NORM or metric in SCREENED:
            return not math.isfinite(x) or self._outlier(metric, step)
        return False

    def check(self) -> Verdict:
        """Run the detectors now, whatever the schedule (e.g. at a logging or eval boundary)."""
        last = max((b.max_step or 0 for b in self.run.metrics.values()), default=0)
        step = max([last] + [s for s, _, _ in self._pending])
        return Verdict(step=step, stop=self.should_stop, events=tuple(self._check(step)))

    def close(self) -> list[Finding]:
        """Final check; returns the run's findings (the verdict on everything logged)."""
        if not self._closed:
            self.check()
            self._closed = True
        return list(self.tracker.findings)

    @property
    def findings(self) -> list[Finding]:
        return list(self.tracker.findings)

    # ------------------------------------------------------------------ internals

    def _elapsed(self) -> float:
        now = _clock()
        if self._t0 is None or now < self._t0:  # first call, or another thread: start here
            self._t0 = now
        return now - self._t0

    def _due(self) -> bool:
        if self.check_every:
            return self._since_check >= self.check_every
        # Time budget: this check plus all earlier ones stay within `budget` of the elapsed time.
        elapsed = self._elapsed()
        return self.check_seconds + self._last_cost <= self.budget * elapsed

    def _urgent_allowed(self) -> bool:
        # An outlier or a non-finite value checks at once, unless checks already took 10x the
        # budget (a run so noisy that every few points look like spikes): then the schedule rules.
        # The first few always run: a spike is rare, and it is what the guard is for.
        elapsed = self._elapsed()
        self._urgent += 1
        return (
            self._urgent <= 5 or self.check_seconds + self._last_cost <= 10 * self.budget * elapsed
        )

    def flush(self) -> Verdict:
        """Move values logged as tensors to the host now (one sync for all of them), screen them
        for spikes and check at once if one looks like a spike; the callbacks call this at the
        framework's logging interval."""
        step = max((s for s, _, _ in self._pending), default=None)
        urgent = self._flush_pending()
        if step is None:
            return Verdict(step=-1, stop=self.should_stop)
        events = self._check(step) if (urgent and self._urgent_allowed()) or self._due() else []
        return Verdict(step=step, stop=self.should_stop, events=tuple(events))

    def _flush_pending(self) -> bool:
        """Pending tensors -> host values in write order; True when one of them looks like a spike."""
        if not self._pending:
            return False
        import torch  # only reached when tensors were logged, so torch is there

        pend, self._pending = self._pending, []
        if all(t.device.type == "cpu" for _, _, t in pend):  # no device: no sync to batch
            vals = [float(t.detach()) for _, _, t in pend]
        else:
            # One transfer for all; float32: every device has it (MPS has no float64).
            vals = torch.stack([t.detach().reshape(()).float() for _, _, t in pend]).cpu().tolist()
        urgent = False
        for (step, metric, _), x in zip(pend, vals, strict=True):
            self.run.add_point(metric, step, x)
            if metric in (T.TRAIN_LOSS, T.GRAD_NORM) and (
                not math.isfinite(x) or self._outlier(metric, step)
            ):
                urgent = True
        return urgent

    def _check(self, step: int) -> list[Event]:
        t = _clock()
        self._flush_pending()
        events = self.tracker.update([self.run.run_data()])
        self._since_check = 0
        self.checks += 1
        for e in events:
            self._emit(e)
            if (
                e.finding.severity >= self.level
                and self.action in ("stop", "checkpoint")
                and not self.should_stop
            ):
                self.should_stop = True
                self.stop_step = step
                self.stop_finding = e.finding
        self._last_cost = _clock() - t
        self.check_seconds += self._last_cost
        return events

    def _emit(self, e: Event) -> None:
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.out_dir / FINDINGS_FILE, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(e.to_dict(), sort_keys=True) + "\n")
        if self.on_finding is not None:
            self.on_finding(e)

    def _skip_decision(self, step: int, outlier: bool) -> bool:
        """Skip this step if its loss or grad norm is an outlier, at most ``max_skips`` in a row."""
        if not outlier:
            self._consecutive_skips = 0
            return False
        if self._consecutive_skips >= self.max_skips:
            return False  # still up after max_skips skipped steps: a shift, let the run see it
        self._consecutive_skips += 1
        self.skipped_steps.append(step)
        return True

    def _outlier(self, metric: str, step: int) -> bool:
        return self._spikes.outlier(self.run.metrics[metric], metric)


def _host_values(values: Sequence[Any]) -> list[float]:
    """Floats for a list of floats and/or 0-d tensors: one device->host transfer at most."""
    if all(type(v) is float for v in values):
        return list(values)
    if not any(_is_tensor(v) for v in values):
        return [_to_float(v) for v in values]
    import torch  # tensors were passed, so torch is there

    ts = [v for v in values if _is_tensor(v)]
    if all(t.device.type == "cpu" for t in ts):
        got = iter(float(t.detach()) for t in ts)
    else:  # one transfer for all; float32: every device has it (MPS has no float64)
        got = iter(torch.stack([t.detach().reshape(()).float() for t in ts]).cpu().tolist())
    return [next(got) if _is_tensor(v) else _to_float(v) for v in values]


def _is_tensor(v: Any) -> bool:
    return hasattr(v, "detach") and hasattr(v, "reshape") and type(v).__module__.startswith("torch")


def _to_float(v: Any) -> float:
    if _is_tensor(v):
        return float(v.detach().reshape(()).item())
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ConfigError(
            f"Monitor.log: expected a number or a 0-d tensor, got {type(v).__name__}"
        ) from None
