"""Baseline comparison: did training get less stable after a change?

``compare_reports(current, baseline)`` lines the two runs up by step and asks four questions,
each with a threshold a CI job can tune:

- loss at matched steps: median ratio and difference over the last ``tail_frac`` (10 %) of the
  common steps, where a run has settled; worse when the ratio exceeds ``max_loss_ratio``.
- new finding kinds: kinds at or above ``min_severity`` that the baseline does not have.
- more spikes: distinct spike events (a loss and a grad spike at one step are one; each spike of a
  grad-spike finding counts) beyond ``max_extra_spikes``.
- grad-norm percentiles: p50 and p99 over the common steps; worse when either grows more than
  ``max_grad_p50_ratio`` / ``max_grad_p99_ratio``.

A question that cannot be answered (no grad norm on one side) is "not checked", never a pass; when
the loss itself cannot be aligned nothing is judged and the CLI exits 2. Rendering is in
``stabdiag.render.compare``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stabdiag import words
from stabdiag.errors import StabdiagError
from stabdiag.findings import Finding, Severity
from stabdiag.report import Report
from stabdiag.table import GRAD_NORM, TRAIN_LOSS, Series
from stabdiag.textfmt import step_span

SPIKE_KINDS = ("loss-spike", "grad-spike")


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    """How much worse the current run may be before ``compare`` exits 1."""

    max_loss_ratio: float = 1.05
    """Median current/baseline loss over the tail of the common steps (1.05 = 5 % worse)."""
    tail_frac: float = 0.10
    """Fraction of the common steps, from the end, that the loss is compared over."""
    max_extra_spikes: int = 0
    """Loss and grad spikes the current run may have beyond the baseline's."""
    max_grad_p50_ratio: float = 1.5
    max_grad_p99_ratio: float = 2.0
    min_severity: Severity = Severity.WARNING
    """Findings below this do not count as new kinds (restarts and start-up scale search are info)."""
    allow_new_kinds: bool = False


@dataclass(frozen=True, kw_only=True)
class Check:
    """One question and its answer; ``worse`` is None when it could not be checked."""

    name: str
    worse: bool | None
    summary: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """A run judged against its baseline on their common steps: each check (final loss, new
    finding kinds, spikes, grad-norm percentiles) and whether the run is worse than allowed."""

    run: str
    baseline: str
    common_steps: tuple[int, int] | None
    n_common: int
    checks: tuple[Check, ...]
    notes: tuple[str, ...] = ()

    @property
    def worse(self) -> bool:
        return any(c.worse for c in self.checks)

    @property
    def judged(self) -> bool:
        return self.n_common > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "baseline": self.baseline,
            "worse": self.worse,
            "common_steps": list(self.common_steps) if self.common_steps else None,
            "n_common": self.n_common,
            "checks": [
                {"name": c.name, "worse": c.worse, "summary": c.summary, "values": c.values}
                for c in self.checks
            ],
            "notes": list(self.notes),
        }


class CompareError(StabdiagError):
    """The two sides cannot be compared (no single run, no common steps)."""


def single_run(report: Report, side: str, name: str | None = None) -> str:
    """The one run of a side: ``name`` if given, else the report must hold exactly one run."""
    names = [r.name for r in report.runs]
    if name is not None:
        if name not in names:
            raise CompareError(
                f"{side}: no run named {name!r}; found: {', '.join(names) or 'none'}"
            )
        return name
    if len(names) != 1:
        raise CompareError(
            f"{side}: expected exactly one run, found {len(names)}"
            f" ({', '.join(names) or 'none'}); pass a single run's file or directory"
        )
    return names[0]


def _align(a: Series, b: Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps both runs logged with finite values, and the two runs' values there."""
    a, b = a.finite, b.finite
    steps, ia, ib = np.intersect1d(a.steps, b.steps, assume_unique=True, return_indices=True)
    return steps, a.values[ia], b.values[ib]


def _series(report: Report, run: str, metric: str) -> Series | None:
    """The run's series as the detectors judged it (``Report.run_data``: cut once by analysis,
    the chosen loss under its canonical name), not cut from the whole table again."""
    data = report.run_data(run)
    return data.get(metric) if data is not None else None


def _loss_check(steps: np.ndarray, cur: np.ndarray, base: np.ndarray, th: Thresholds) -> Check:
    k = max(1, int(np.ceil(len(steps) * th.tail_frac)))
    c, b = cur[-k:], base[-k:]
    ok = b > 0
    ratio = float(np.median(c[ok] / b[ok])) if ok.any() else float("nan")
    diff = float(np.median(c - b))
    worse = bool(np.isfinite(ratio) and ratio > th.max_loss_ratio)
    return Check(
        name="loss",
        worse=worse,
        summary=(
            f"loss over the last {k} common steps ({step_span(int(steps[-k]), int(steps[-1]))}): "
            f"median ratio {ratio:.3f} (limit {th.max_loss_ratio:g}), median difference {diff:+.4g}"
        ),
        values={
            "ratio": ratio,
            "difference": diff,
            "points": k,
            "limit": th.max_loss_ratio,
            "from_step": int(steps[-k]),
            "to_step": int(steps[-1]),
        },
    )


def _kinds_check(cur: list[Finding], base: list[Finding], th: Thresholds) -> Check:
    have = {f.kind for f in base if f.severity >= th.min_severity}
    new = sorted({f.kind for f in cur if f.severity >= th.min_severity} - have)
    worse = bool(new) and not th.allow_new_kinds
    return Check(
        name="new-kinds",
        worse=worse,
        summary=f"new finding kinds: {', '.join(new)}" if new else "no new finding kinds",
        values={"new": new},
    )


def spike_events(findings: list[Finding]) -> list[int]:
    """Onset steps of distinct spike events: every grad-norm spike of a grad-spike finding and every
    loss-spike event (each blip of a folded one) counts once, and a loss spike and a grad spike at
    the same step (within one log interval) are one event."""
    pts: list[tuple[int, int]] = []  # (step, tolerance)
    for f in findings:
        if f.kind not in SPIKE_KINDS or f.step_start is None:
            continue
        tol = int(f.evidence.get("log_interval") or 1)
        if f.kind == "grad-spike":
            pts += [(int(s), tol) for s in (f.evidence.get("spike_steps") or [f.step_start])]
        elif f.evidence.get("blip_steps"):
            pts += [(int(s), tol) for s in f.evidence["blip_steps"]]
        else:
            pts.append((int(f.step_start), tol))
    events: list[int] = []
    for step, tol in sorted(pts):
        if events and step - events[-1] <= tol:
            continue
        events.append(step)
    return events


def _spike_check(cur: list[Finding], base: list[Finding], th: Thresholds) -> Check:
    nc = len(spike_events(cur))
    nb = len(spike_events(base))
    worse = nc > nb + th.max_extra_spikes
    return Check(
        name="spikes",
        worse=worse,
        summary=f"spikes: {nc} vs {nb} in the baseline (allowed extra: {th.max_extra_spikes})",
        values={"current": nc, "baseline": nb, "allowed_extra": th.max_extra_spikes},
    )


def _grad_check(cur: Series | None, base: Series | None, lo: int, hi: int, th: Thresholds) -> Check:
    if cur is None or base is None:
        side = "current run" if cur is None else "baseline"
        return Check(
            name="grad-norm",
            worse=None,
            summary=f"grad norm not checked: no {GRAD_NORM} in the {side}",
        )

    def window(s: Series) -> np.ndarray:
        f = s.finite
        return f.values[(f.steps >= lo) & (f.steps <= hi)]

    c, b = window(cur), window(base)
    if len(c) == 0 or len(b) == 0:
        return Check(
            name="grad-norm",
            worse=None,
            summary="grad norm not checked: no finite values in the common steps",
        )
    pc = {q: float(np.percentile(c, q)) for q in (50, 99)}
    pb = {q: float(np.percentile(b, q)) for q in (50, 99)}
    r50 = pc[50] / pb[50] if pb[50] > 0 else float("inf")
    r99 = pc[99] / pb[99] if pb[99] > 0 else float("inf")
    worse = r50 > th.max_grad_p50_ratio or r99 > th.max_grad_p99_ratio
    return Check(
        name="grad-norm",
        worse=worse,
        summary=(
            f"grad norm p50 {pc[50]:.4g} vs {pb[50]:.4g} (x{r50:.2f}, limit {th.max_grad_p50_ratio:g}); "
            f"p99 {pc[99]:.4g} vs {pb[99]:.4g} (x{r99:.2f}, limit {th.max_grad_p99_ratio:g})"
        ),
        values={
            "p50": pc[50],
            "p99": pc[99],
            "baseline_p50": pb[50],
            "baseline_p99": pb[99],
            "p50_ratio": r50,
            "p99_ratio": r99,
        },
    )


def compare_reports(
    current: Report,
    baseline: Report,
    thresholds: Thresholds | None = None,
    *,
    run: str | None = None,
    baseline_run: str | None = None,
) -> Comparison:
    """Compare one run of ``current`` with one run of ``baseline`` (each report carries its
    runs' series, as ``analyze`` returns them)."""
    th = thresholds or Thresholds()
    rc, rb = single_run(current, "RUN", run), single_run(baseline, "--baseline", baseline_run)
    lc, lb = _series(current, rc, TRAIN_LOSS), _series(baseline, rb, TRAIN_LOSS)
    if lc is None or lb is None:
        which = rc if lc is None else rb
        raise CompareError(
            f"{which}: no {TRAIN_LOSS} series to compare "
            "(use --map train/loss=SERIES; `stabdiag series PATH` lists what was read)"
        )
    steps, vc, vb = _align(lc, lb)
    if len(steps) == 0:
        raise CompareError(
            f"{rc} and {rb} share no logged steps with finite loss "
            f"(current {step_span(int(lc.steps[0]), int(lc.steps[-1]))}, "
            f"baseline {step_span(int(lb.steps[0]), int(lb.steps[-1]))}); "
            "align by step is impossible"
        )
    lo, hi = int(steps[0]), int(steps[-1])
    fc, fb = current.findings_of(rc), baseline.findings_of(rb)
    checks = (
        _loss_check(steps, vc, vb, th),
        _kinds_check(fc, fb, th),
        _spike_check(fc, fb, th),
        _grad_check(_series(current, rc, GRAD_NORM), _series(baseline, rb, GRAD_NORM), lo, hi, th),
    )
    notes = []
    if int(lc.steps[-1]) < int(lb.steps[-1]):
        notes.append(
            f"the current run ends at step {int(lc.steps[-1])}, the baseline at {int(lb.steps[-1])}: "
            "compared over the common steps only"
        )
    nf = int((~np.isfinite(lc.values)).sum())
    if nf:
        notes.append(
            f"the current run has {words.count(nf, 'non-finite loss value')}, left out of the ratio"
        )
    return Comparison(
        run=rc,
        baseline=rb,
        common_steps=(lo, hi),
        n_common=len(steps),
        checks=checks,
        notes=tuple(notes),
    )
