"""`stabdiag verify`: re-run the trouble with each suggested fix and say whether it is gone.

Advice from a log is a guess until it is tried. For a run made by `stabdiag train`, every
warning-or-worse event is replayed from the newest kept checkpoint at or before its onset
(`stabdiag.train.branch`): one branch per remedy that can be applied mid-run, plus one control
branch with no change. The control separates the fix from noise: a bad batch replayed without
skipping must spike again, and when the control does not show the event again no remedy can be
credited with removing it ("inconclusive").

Each branch is analysed with the same detectors over the event's window. A remedy is "fixed"
when the control shows the event again and the branch does not, "not fixed" when the branch shows
it too, and "inconclusive" when the control did not reproduce it or the branch did not finish.

Torch is imported only when branches are trained; planning and judging are plain Python.
Branch directories sit beside the run (RUN-verify-sSTEP-REMEDY), so re-running skips the branches
that already finished.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stabdiag.errors import TrainError
from stabdiag.findings import Finding, Severity
from stabdiag.textfmt import step_span
from stabdiag.train.config import data_index

CONTROL = "control"
RECUR_TOLERANCE = 3
"""Steps either side of the event's window in which a branch's finding of the same kind counts
as the event recurring (detector onsets move by a step or two between near-identical runs)."""
AFTER_WINDOW = 10
"""Steps after the window over which the mean train loss is compared (one step is too noisy)."""
NOT_MID_RUN = {
    "qk-norm": "QK-norm changes the model",
    "pre-ln": "norm placement changes the model",
    "fp32-softmax": "the trainer's softmax precision follows its precision setting",
}
"""Remedies a checkpoint cannot take: they need a new model (the --proxy route)."""


@dataclass(frozen=True)
class Event:
    """Warning-or-worse findings of the run that overlap in steps: one thing to replay."""

    start: int
    end: int
    findings: tuple[Finding, ...]

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.kind for f in self.findings))

    @property
    def label(self) -> str:
        where = step_span(self.start, self.end)
        return f"{'/'.join(self.kinds)}@{where}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "step_start": self.start,
            "step_end": self.end,
            "kinds": list(self.kinds),
            "severity": max(f.severity for f in self.findings).label,
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass(frozen=True)
class Change:
    """One remedy as branch arguments: `sets` (KEY=VALUE) and `skip` (data batch ranges)."""

    remedy: str
    phrase: str
    """How the verdict line names it: 'skipping batch 60', 'lowering the LR 2x'."""
    sets: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """What one branch did over the event's window."""

    status: str
    """'done', 'reused' (finished by an earlier verify), 'crashed', 'interrupted' or 'nonfinite'."""
    recurred: bool | None
    findings: tuple[dict[str, Any], ...] = ()
    loss_at_start: float | None = None
    loss_at_end: float | None = None
    loss_after: float | None = None
    final_loss: float | None = None
    steps: int = 0
    """Steps the branch trained (its cost)."""
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "recurred": self.recurred,
            "findings": list(self.findings),
            "loss_at_start": _num(self.loss_at_start),
            "loss_at_end": _num(self.loss_at_end),
            "loss_after": _num(self.loss_after),
            "final_loss": _num(self.final_loss),
            "steps": self.steps,
            "error": self.error,
        }


@dataclass(frozen=True)
class Trial:
    """One remedy replayed on one event: the branch trained with it, its outcome next to the
    control's, and the verdict with its reason."""

    event: Event
    change: Change
    branch: Path
    checkpoint_step: int
    changes: dict[str, list[Any]]
    outcome: Outcome
    control: Outcome
    verdict: str
    """'fixed', 'not fixed' or 'inconclusive'."""
    reason: str

    @property
    def resolved(self) -> bool | None:
        return {"fixed": True, "not fixed": False}.get(self.verdict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "finding": self.event.to_dict(),
            "remedy": self.change.remedy,
            "changes": self.changes,
            "branch": str(self.branch),
            "checkpoint_step": self.checkpoint_step,
            "resolved": self.resolved,
            "verdict": self.verdict,
            "reason": self.reason,
            "before": self.control.to_dict(),
            "after": self.outcome.to_dict(),
        }


@dataclass(frozen=True)
class EventResult:
    """One event of the run and every remedy tried on it, with the control branch (no change)."""

    event: Event
    control: Outcome | None
    control_branch: Path | None
    trials: tuple[Trial, ...]
    untried: tuple[str, ...] = ()
    """Remedies named for the event that need a new model (--proxy) or that the run already has."""
    problem: str = ""
    """Why the event could not be replayed (no checkpoint before it), else ''."""

    @property
    def verdict_line(self) -> str:
        if self.problem:
            return self.problem
        if self.control is not None and self.control.recurred is False:
            return (
                f"the control branch did not show {self.event.label} again: the event does not "
                "reproduce from the checkpoint, so no remedy can be credited"
            )
        fixed = [t.change.phrase for t in self.trials if t.verdict == "fixed"]
        failed = [t.change.phrase for t in self.trials if t.verdict == "not fixed"]
        unsure = [t.change.phrase for t in self.trials if t.verdict == "inconclusive"]
        parts = []
        if fixed:
            parts.append(f"{_join(fixed)} remove{'s' if len(fixed) == 1 else ''} it")
        if failed:
            parts.append(f"{_join(failed)} do{'es' if len(failed) == 1 else ''} not")
        if unsure:
            parts.append(f"{_join(unsure)}: inconclusive")
        return "; ".join(parts) or "no remedy could be applied mid-run"

    def to_dict(self) -> dict[str, Any]:
        return {
            "finding": self.event.to_dict(),
            "verdict": self.verdict_line,
            "control": self.control.to_dict() if self.control else None,
            "control_branch": str(self.control_branch) if self.control_branch else None,
            "untried": list(self.untried),
            "problem": self.problem,
        }


@dataclass(frozen=True)
class VerifyResult:
    """What ``stabdiag verify`` found for a run: each replayed event and its trials."""

    run_dir: Path
    events: tuple[EventResult, ...]
    interrupted: bool = False
    wall_s: float = 0.0

    @property
    def trials(self) -> tuple[Trial, ...]:
        return tuple(t for e in self.events for t in e.trials)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": str(self.run_dir),
            "interrupted": self.interrupted,
            "wall_s": round(self.wall_s, 2),
            "events": [e.to_dict() for e in self.events],
            "trials": [t.to_dict() for t in self.trials],
        }


# ----------------------------------------------------------------------------- planning


def find_events(findings: Sequence[Finding], gap: int = RECUR_TOLERANCE) -> list[Event]:
    """Warning-or-worse findings with a step, grouped where their windows overlap (a bad batch
    is a loss spike and a grad spike at the same step: one event, replayed once)."""
    located = sorted(
        (f for f in findings if f.severity >= Severity.WARNING and f.step_start is not None),
        key=lambda f: (f.step_start, f.step_end if f.step_end is not None else f.step_start),
    )
    events: list[Event] = []
    for f in located:
        start = int(f.step_start)  # type: ignore[arg-type]
        end = int(f.step_end) if f.step_end is not None else start
        if events and start <= events[-1].end + gap:
            last = events[-1]
            events[-1] = Event(last.start, max(last.end, end), (*last.findings, f))
        else:
            events.append(Event(start, end, (f,)))
    return events


def changes_for(
    event: Event, cfg: Any, rules_of: Callable[[Finding], Sequence[Any]]
) -> tuple[list[Change], list[str]]:
    """The event's remedies (in the order the remedies module ranks them for its findings, worst
    finding first) as mid-run changes to the run's config `cfg` (a TrainConfig); and the remedies
    that cannot be tried mid-run or that the run already applies, each with why."""
    from stabdiag.train.config import parse_skips

    worst_first = sorted(event.findings, key=lambda f: -int(f.severity))
    ids = list(dict.fromkeys(r.id for f in worst_first for r in rules_of(f)))
    skips = parse_skips(cfg.skip_batches)
    lo, hi = data_index(event.start, skips), data_index(event.end, skips)
    batches = f"batch {lo}" if lo == hi else f"batches {lo}-{hi}"
    made: dict[str, Change] = {}
    untried: list[str] = []
    for rid in ids:
        change: Change | None = None
        if rid in ("rewind", "skip-spike-updates", "check-data", "injected"):
            change = Change("skip-batches", f"skipping {batches}", skip=(f"{lo}:{hi}",))
        elif rid == "lower-lr":
            lr = cfg.lr / 2
            sets = [f"lr={lr:g}"] + ([f"min_lr={lr / 10:g}"] if cfg.min_lr > lr else [])
            change = Change(
                "lower-lr", f"lowering the LR 2x ({cfg.lr:g} -> {lr:g})", sets=tuple(sets)
            )
        elif rid in ("clip", "adaptive-clip"):
            clip = cfg.grad_clip / 2 if cfg.grad_clip > 0 else 1.0
            change = Change(
                "clip", f"clipping the grad norm at {clip:g}", sets=(f"grad_clip={clip:g}",)
            )
        elif rid == "beta2":
            if cfg.beta2 > 0.95:
                change = Change(
                    "beta2", f"lowering beta2 to 0.95 (from {cfg.beta2:g})", sets=("beta2=0.95",)
                )
            else:
                untried.append(f"beta2: already {cfg.beta2:g}")
        elif rid == "z-loss":
            if cfg.z_loss <= 0:
                change = Change("z-loss", "adding z-loss 1e-4", sets=("z_loss=1e-4",))
            else:
                untried.append(f"z-loss: already {cfg.z_loss:g}")
        elif rid == "bf16":
            if cfg.precision == "fp16":
                change = Change("bf16", "switching fp16 to bf16", sets=("precision=bf16",))
            else:
                untried.append(f"bf16: the run is {cfg.precision}")
        elif rid == "warmup":
            if event.start <= max(2 * cfg.warmup_steps, 1):
                n = max(2 * cfg.warmup_steps, 2 * event.start, 1)
                change = Change(
                    "warmup",
                    f"a {n}-step warm-up (from {cfg.warmup_steps})",
                    sets=(f"warmup_steps={n}",),
                )
            else:
                untried.append("warmup: the event came after warm-up")
        elif rid in NOT_MID_RUN:
            untried.append(f"{rid}: {NOT_MID_RUN[rid]}; try it with --proxy")
        if change is not None and change.remedy not in made:
            made[change.remedy] = change
    return list(made.values()), untried


def branch_name(parent: Path, event: Event, remedy: str) -> str:
    return f"{parent.name}-verify-s{event.start}-{remedy}"


@dataclass(frozen=True)
class Job:
    """One branch to train (or reuse)."""

    event: Event
    change: Change
    plan: Any  # stabdiag.train.branch.BranchPlan
    untried: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.plan.config.run_name


def plan(
    run_dir: Path, findings: Sequence[Finding], max_remedies: int = 3
) -> tuple[list[Job], list[EventResult]]:
    """Branch plans for every replayable event (control first), and the events that cannot be
    replayed (no checkpoint at or before the onset) as finished EventResults with the reason."""
    from stabdiag.remedies import rules_for
    from stabdiag.train.branch import plan_branch
    from stabdiag.train.config import TrainConfig

    cfg = TrainConfig.from_dict(
        json.loads((run_dir / "config.json").read_text()), where=str(run_dir / "config.json")
    )
    jobs: list[Job] = []
    unplayable: list[EventResult] = []
    for event in find_events(findings):
        changes, untried = changes_for(event, cfg, rules_for)
        changes = [Change(CONTROL, "no change"), *changes[: max(0, max_remedies)]]
        try:
            for ch in changes:
                p = plan_branch(
                    run_dir,
                    event.start,
                    list(ch.sets),
                    list(ch.skip),
                    branch_name(run_dir, event, ch.remedy),
                )
                jobs.append(Job(event, ch, p, tuple(untried)))
        except TrainError as exc:
            jobs = [j for j in jobs if j.event is not event]
            unplayable.append(
                EventResult(
                    event,
                    None,
                    None,
                    (),
                    tuple(untried),
                    problem=f"cannot replay {event.label}: {exc}; try --proxy",
                )
            )
    return jobs, unplayable


# ----------------------------------------------------------------------------- running


Progress = Callable[[str, int, int], None]
"""(branch name, steps done, total) as a branch trains."""


def _finished(run_dir: Path, steps: int) -> bool:
    try:
        meta = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        meta.get("stop_reason") in ("completed", "nonfinite")
        and meta.get("finished") is not None
        and (meta.get("stop_reason") == "nonfinite" or meta.get("steps_done") == steps)
    )


def _clear_unfinished(job: Job) -> None:
    """A branch an earlier verify left half-trained is ours to redo: remove it, after checking it
    is a branch of this parent (run.json names it), never anything else."""
    d = Path(job.plan.config.out_dir) / job.name
    if not d.exists():
        return
    try:
        parent = json.loads((d / "run.json").read_text()).get("parent", {}).get("run_dir")
    except (OSError, ValueError, AttributeError):
        parent = None
    if parent is None or Path(parent).resolve() != job.plan.parent_dir.resolve():
        raise TrainError(
            f"{d}: exists and is not an unfinished verify branch of {job.plan.parent_dir}; move it away"
        )
    shutil.rmtree(d)


def run_job(job: Job, progress: Progress | None = None, queue: Any = None) -> tuple[str, str, str]:
    """Train one branch; returns (name, status, error). Safe to call in a worker process."""
    from stabdiag.train import train

    d = Path(job.plan.config.out_dir) / job.name
    if _finished(d, job.plan.config.steps):
        return job.name, "reused", ""

    def report(step: int, _m: dict[str, float]) -> None:
        if progress is not None:
            progress(job.name, step, job.plan.config.steps)
        if queue is not None:
            queue.put((job.name, step, job.plan.config.steps))

    try:
        _clear_unfinished(job)
        result = train(job.plan.config, progress=report, branch=job.plan)
    except TrainError as exc:
        return job.name, "crashed", str(exc)
    except Exception as exc:  # noqa: BLE001 - one crashed branch must not stop the others
        return job.name, "crashed", f"{type(exc).__name__}: {exc}"
    if result.interrupted:
        return job.name, "interrupted", ""
    return job.name, "nonfinite" if result.stop_reason == "nonfinite" else "done", ""


def run_jobs(
    jobs: Sequence[Job], n_jobs: int = 1, progress: Progress | None = None
) -> tuple[dict[str, tuple[str, str]], bool]:
    """Train the branches, `n_jobs` at a time in worker processes (1: in this process).
    Returns name -> (status, error) and whether Ctrl-C stopped it (the trainer stops each branch
    at a clean point; a re-run redoes the unfinished ones)."""
    status: dict[str, tuple[str, str]] = {}
    interrupted = False
    for job in jobs:  # finished by an earlier verify: no worker process needed
        if _finished(Path(job.plan.config.out_dir) / job.name, job.plan.config.steps):
            status[job.name] = ("reused", "")
    jobs = [j for j in jobs if j.name not in status]
    if n_jobs <= 1 or len(jobs) <= 1:
        for job in jobs:
            try:
                name, st, err = run_job(job, progress)
            except KeyboardInterrupt:
                st, err, name = "interrupted", "", job.name
            status[name] = (st, err)
            if st == "interrupted":
                interrupted = True
                break
        return status, interrupted

    import multiprocessing
    import queue as queue_mod
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("spawn")  # torch and fork do not mix
    with ctx.Manager() as manager:
        q = manager.Queue()
        with ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx) as pool:
            pending = {pool.submit(run_job, job, None, q): job for job in jobs}
            while pending:
                try:
                    done, _ = wait(pending, timeout=0.3, return_when=FIRST_COMPLETED)
                    while True:
                        try:
                            name, step, total = q.get_nowait()
                        except queue_mod.Empty:
                            break
                        if progress is not None:
                            progress(name, step, total)
                except KeyboardInterrupt:  # the workers got the SIGINT too and stop cleanly
                    interrupted = True
                    for fut in pending:
                        fut.cancel()
                    continue
                for fut in done:
                    job = pending.pop(fut)
                    try:
                        name, st, err = fut.result()
                    except Exception as exc:  # noqa: BLE001 - a dead worker is one crashed branch
                        name, st, err = job.name, "crashed", f"{type(exc).__name__}: {exc}"
                    status[name] = (st, err)
                    interrupted = interrupted or st == "interrupted"
                pending = {f: j for f, j in pending.items() if not f.cancelled()}
    return status, interrupted


# ----------------------------------------------------------------------------- judging


def train_losses(run_dir: Path) -> dict[int, float]:
    """step -> train/loss from the trainer's metrics.csv (long format: step,metric,value,...)."""
    out: dict[int, float] = {}
    try:
        with open(run_dir / "metrics.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                if row.get("metric") == "train/loss":
                    try:
                        out[int(row["step"])] = float(row["value"])
                    except (TypeError, ValueError):
                        continue
    except OSError:
        pass
    return out


def outcome_of(branch: Path, event: Event, status: str, error: str, from_step: int) -> Outcome:
    """Re-run the detectors on the branch and look for the event's kinds over its window."""
    if status in ("crashed", "interrupted"):
        return Outcome(status, None, error=error)
    from stabdiag.api import analyze

    report = analyze([branch], jobs=1)
    lo, hi = event.start - RECUR_TOLERANCE, event.end + RECUR_TOLERANCE
    hits = tuple(
        f.to_dict()
        for f in report.findings
        if f.kind in event.kinds
        and f.severity >= Severity.WARNING
        and f.step_start is not None
        and f.step_start <= hi
        and (f.step_end if f.step_end is not None else f.step_start) >= lo
    )
    losses = train_losses(branch)
    after = [
        v
        for s, v in losses.items()
        if event.end < s <= event.end + AFTER_WINDOW and math.isfinite(v)
    ]
    try:
        meta = json.loads((branch / "run.json").read_text())
    except (OSError, ValueError):
        meta = {}
    final = meta.get("final_loss")
    steps_done = meta.get("steps_done")
    return Outcome(
        status,
        bool(hits) or status == "nonfinite",
        hits,
        loss_at_start=losses.get(event.start),
        loss_at_end=losses.get(event.end),
        loss_after=sum(after) / len(after) if after else None,
        final_loss=float(final) if isinstance(final, (int, float)) else None,
        steps=(steps_done - from_step) if isinstance(steps_done, int) else 0,
        error=error,
    )


def judge(control: Outcome, branch: Outcome) -> tuple[str, str]:
    """(verdict, reason) of one remedy against the control."""
    if control.recurred is None:
        return "inconclusive", f"the control branch {_was(control.status)}"
    if branch.recurred is None:
        return "inconclusive", f"the branch {_was(branch.status)}" + (
            f": {branch.error}" if branch.error else ""
        )
    if not control.recurred:
        return (
            "inconclusive",
            "the control did not show the event again (not reproducible from the checkpoint)",
        )
    if branch.recurred:
        return "not fixed", "the event recurred on the branch as on the control"
    reason = "the control shows the event again; the branch does not"
    if (
        branch.final_loss is not None
        and control.final_loss is not None
        and branch.final_loss > 1.05 * control.final_loss
    ):
        reason += f", at a cost: final loss {branch.final_loss:.4g} vs the control's {control.final_loss:.4g}"
    return "fixed", reason


def verify(
    run_dir: Path,
    *,
    max_remedies: int = 3,
    jobs: int = 1,
    progress: Progress | None = None,
    on_plan: Callable[[list[Job]], None] | None = None,
) -> VerifyResult:
    """Analyse a `stabdiag train` run, replay each warning-or-worse event with its remedies and a
    control, and judge each remedy. TrainError (one line) when the run is not ours or nothing can
    be replayed."""
    import time

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file() or not (run_dir / "run.json").is_file():
        raise TrainError(
            f"{run_dir}: expected a stabdiag train run directory (config.json, run.json, checkpoints/), "
            "found none; for another trainer's run use --proxy"
        )
    try:
        import torch  # noqa: F401
    except ImportError:
        raise TrainError(
            "stabdiag verify replays the run and needs torch: pip install 'stabdiag[train]'; "
            "or use --proxy"
        ) from None
    from stabdiag.api import analyze

    report = analyze([run_dir], jobs=1)
    todo, unplayable = plan(run_dir, report.findings, max_remedies)
    if not todo and unplayable:
        raise TrainError("; ".join(e.problem for e in unplayable))
    if on_plan is not None:
        on_plan(todo)
    status, interrupted = run_jobs(todo, jobs, progress)
    events: list[EventResult] = list(unplayable)
    by_event: dict[int, list[Job]] = {}
    for job in todo:
        by_event.setdefault(id(job.event), []).append(job)
    for group in by_event.values():
        event = group[0].event
        outs = {}
        for job in group:
            st, err = status.get(job.name, ("interrupted", ""))
            d = Path(job.plan.config.out_dir) / job.name
            outs[job.change.remedy] = (job, outcome_of(d, event, st, err, job.plan.step))
        cjob, control = outs[CONTROL]
        trials = []
        for remedy, (job, out) in outs.items():
            if remedy == CONTROL:
                continue
            verdict, reason = judge(control, out)
            trials.append(
                Trial(
                    event,
                    job.change,
                    Path(job.plan.config.out_dir) / job.name,
                    job.plan.step,
                    job.plan.changes,
                    out,
                    control,
                    verdict,
                    reason,
                )
            )
        events.append(
            EventResult(
                event,
                control,
                Path(cjob.plan.config.out_dir) / cjob.name,
                tuple(trials),
                cjob.untried,
            )
        )
    events.sort(key=lambda e: e.event.start)
    return VerifyResult(run_dir, tuple(events), interrupted, time.perf_counter() - t0)


def _was(status: str) -> str:
    return "was interrupted" if status == "interrupted" else status


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _num(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


__all__ = [
    "Change",
    "Event",
    "EventResult",
    "Outcome",
    "Trial",
    "VerifyResult",
    "changes_for",
    "find_events",
    "judge",
    "verify",
]
