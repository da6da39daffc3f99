"""lr-schedule (SD501): no warm-up at a high LR, and LR jumps that line up with trouble.

What it detects
    (1) The learning rate is already at its peak at the first logged step (no warm-up).
    (2) A sudden multiplicative LR increase after warm-up, or anywhere above the schedule's peak
        (a jump; an LR spike).
    Each is judged by whether trouble (loss spike, non-finite loss, grad-norm explosion)
    followed it.

Why it matters
    Warm-up of >= 5 % of steps is the first remedy for early divergence (Wortsman et al. 2023);
    an LR jump is the usual cause of a resumed run spiking (wrong scheduler state on resume). But
    constant-LR fine-tunes are normal, so an LR shape alone is no finding.

How it is computed
    No warm-up: first LR >= ``at_peak`` (0.9) x peak LR, with >= 3 LR points, judged only when the
    LR log starts near step 0 (first step <= max(``max_first_step`` (100), 1 % of the run)). Trouble within the
    first ``early_frac`` (10 %) of the run -> ``warning``; else ``info`` when the peak LR >=
    ``high_lr`` (1e-3); else nothing.
    Jumps: a point j (j >= 2) with LR[j] >= ``jump_factor`` (2) x LR[j-1] whose rise is also
    >= ``jump_factor`` x the rise at j-1 (abrupt: a warm-up that rises smoothly, linear from near 0
    with ratios 2, 1.5, 1.33, ... or exponential with a constant ratio, never counts however coarsely
    it is logged). The jump's excursion lasts until the LR is back below LR[j] / ``jump_factor``; if
    it comes back within ``spike_max_frac`` (10 %) of the LR points it is a spike, not part of the
    schedule, and the schedule's peak is the max LR outside it (else the max LR). The jump counts
    when it comes after the first point at 0.95 x the schedule's peak (outside the warm-up; a
    stepped warm-up's last step *is* the peak and stays silent), or anywhere when it lands
    >= ``jump_factor`` x above the schedule's peak (an LR spike above the schedule, e.g. x100 for
    10 steps). Trouble within max(``jump_window_steps`` (50), ``jump_window_frac`` (5 %) of the
    run) after it -> ``warning``, otherwise ``info`` (a warm restart schedule, probably intended).
    Never ``error``: the consequence (a loss spike that never recovers, divergence, non-finite
    loss) is reported with its own severity by loss-spike / divergence / nonfinite; this finding
    names the likely cause. Skipped without ``train/lr``.

Known false positives
    Logs that start after the warm-up ended (first logged step late, HF ``logging_steps``) look
    like "no warm-up"; with a low LR or no trouble that stays info or silent.

References
    Wortsman et al. 2023 (arXiv 2309.14322: 5 % warm-up); llm-foundry #232 (jfrankle: lower LR,
    more warm-up); Loshchilov & Hutter SGDR (warm restarts are intended jumps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stabdiag import words
from stabdiag.detectors import _stats as st
from stabdiag.detectors._common import finding, usable
from stabdiag.detectors._trouble import first_within, trouble
from stabdiag.detectors.base import Detector
from stabdiag.findings import Finding, Severity, Skipped
from stabdiag.table import LR, TRAIN_LOSS, RunData

CODE, KIND = "SD501", "lr-schedule"


@dataclass(frozen=True, kw_only=True)
class Config:
    """Thresholds of the lr-schedule check (``[tool.stabdiag.detectors.lr-schedule]``)."""

    at_peak: float = 0.9
    """No warm-up: the first logged LR is already at least this share (90 %) of the peak LR."""
    max_first_step: int = 100
    """Warm-up is judged only when the LR log starts by this step (or 1 % of the run): a later
    first step is an excerpt or a resume, whose warm-up is not visible."""
    high_lr: float = 1e-3
    """No warm-up at a peak LR of at least this is info even without trouble after it; below it,
    only trouble makes a finding."""
    early_frac: float = 0.10
    """No warm-up followed by trouble (a loss spike, divergence, NaN) within this share (10 %) of
    the run is a warning."""
    jump_factor: float = 2.0
    """An abrupt jump: the LR at least doubles from one log point to the next, and that rise is at
    least this multiple of the rise before it, so a smooth warm-up (linear or exponential), however
    coarsely logged, never counts."""
    jump_window_steps: int = 50
    """A jump followed by trouble within max(50 steps, ``jump_window_frac`` of the run) is a
    warning; otherwise info (a warm-restart schedule, probably intended)."""
    jump_window_frac: float = 0.05
    """... or within 5 % of the run's steps, whichever is longer."""
    max_jumps: int = 20
    """Jumps reported per run at most."""
    spike_max_frac: float = 0.10
    """An LR excursion that comes back below its jump within this share (10 %) of the LR points is a
    spike, not the schedule: the schedule's peak is then the largest LR outside it."""


DEFAULT = Config()


def find_jumps(lr: np.ndarray, cfg: Config = DEFAULT) -> list[tuple[int, float, int]]:
    """(j, schedule peak, fall-back index or -1) of each abrupt LR jump outside the warm-up.

    See the module doc for the rule; the schedule peak leaves out a short spike the jump starts.
    """
    n = len(lr)
    if n < 3:
        return []
    before, after = lr[:-1], lr[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        # rise at each point: a ratio; from 0 to > 0 is an infinite rise, 0 to 0 none
        rise = np.where(before > 0, after / before, np.where(after > 0, np.inf, 1.0))
    rise = np.concatenate([[np.nan], rise])
    prev = np.concatenate([[np.nan], rise[:-1]])
    with np.errstate(invalid="ignore"):
        abrupt = (
            np.isfinite(rise)
            & (rise >= cfg.jump_factor)
            & (rise >= cfg.jump_factor * np.maximum(1.0, prev))
        )  # NaN / inf prev: False
    peak = float(np.max(lr))
    out: list[tuple[int, float, int]] = []
    for j in np.flatnonzero(abrupt)[: 10 * cfg.max_jumps]:
        # the LR excursion the jump starts: until the LR is back below lr[j] / jump_factor
        back = st.first_index(lr < lr[j] / cfg.jump_factor, int(j) + 1)
        end = n if back < 0 else back
        sched = peak
        if back >= 0 and end - j <= cfg.spike_max_frac * n:  # a short spike: not the schedule
            sched = float(max(np.max(lr[:j]), np.max(lr[end:])))
        reach = int(np.argmax(lr >= 0.95 * sched))
        if j > reach or lr[j] >= cfg.jump_factor * sched:
            out.append((int(j), sched, back))
        if len(out) >= cfg.max_jumps:
            break
    return out


def check(run: RunData, cfg: Config = DEFAULT) -> list[Finding] | Skipped:
    s = usable(run, LR, 3)
    if s is None:
        return DETECTOR.skipped(run, f"no {LR} series with 3 finite points")
    ok = np.isfinite(s.values)
    steps, lr = s.steps[ok], s.values[ok]
    peak = float(np.max(lr))
    if peak <= 0:
        return []
    loss = run.get(TRAIN_LOSS)
    lo = int(min(steps[0], loss.steps[0])) if loss is not None else int(steps[0])
    hi = int(max(steps[-1], loss.steps[-1])) if loss is not None else int(steps[-1])
    span = max(1, hi - lo)
    events = trouble(run)
    out: list[Finding] = []
    starts_at_start = steps[0] <= max(cfg.max_first_step, cfg.early_frac * span / 10)
    if starts_at_start and lr[0] >= cfg.at_peak * peak:
        hit = first_within(events, lo, lo + int(cfg.early_frac * span))
        if hit or peak >= cfg.high_lr:
            sev = Severity.WARNING if hit else Severity.INFO
            tail = f"; {hit[1]} followed at step {hit[0]}" if hit else "; no trouble followed"
            out.append(
                finding(
                    CODE,
                    KIND,
                    run,
                    severity=sev,
                    metric=LR,
                    step_start=int(steps[0]),
                    step_end=int(steps[0]),
                    message=f"no LR warm-up: the LR was already {st.fmt(float(lr[0]))} (peak {st.fmt(peak)}) "
                    f"at the first logged step {int(steps[0])}{tail}.",
                    evidence={
                        "issue": "no_warmup",
                        "first_lr": float(lr[0]),
                        "peak_lr": peak,
                        "first_step": int(steps[0]),
                        "trouble": hit[1] if hit else None,
                        "trouble_step": hit[0] if hit else None,
                    },
                )
            )
    jumps = find_jumps(lr, cfg)
    win = max(cfg.jump_window_steps, int(cfg.jump_window_frac * span))
    for j, sched, back in jumps:
        at = int(steps[j])
        factor = float(lr[j] / lr[j - 1])
        hit = first_within(events, at, at + win)
        sev = Severity.WARNING if hit else Severity.INFO
        tail = (
            f" and {hit[1]} followed at step {hit[0]}"
            if hit
            else " with no trouble after it (a warm restart?)"
        )
        if back >= 0:
            dur = int(steps[back] - at)
            shape = f"; it fell back to {st.fmt(float(lr[back]))} at step {int(steps[back])} ({words.count(dur, 'step')} later)"
        else:
            shape = "; it stayed up"
        out.append(
            finding(
                CODE,
                KIND,
                run,
                severity=sev,
                metric=LR,
                step_start=int(steps[j - 1]),
                step_end=at,
                message=f"LR jumped {factor:.1f}x ({st.fmt(float(lr[j - 1]))} -> "
                f"{st.fmt(float(lr[j]))}) at step {at}{tail}{shape}.",
                evidence={
                    "issue": "lr_jump",
                    "lr_before": float(lr[j - 1]),
                    "lr_after": float(lr[j]),
                    "factor": factor,
                    "step": at,
                    "schedule_peak": sched,
                    "above_schedule_peak": bool(lr[j] > sched),
                    "fell_back_step": int(steps[back]) if back >= 0 else None,
                    "trouble": hit[1] if hit else None,
                    "trouble_step": hit[0] if hit else None,
                },
            )
        )
    return out


DETECTOR = Detector(
    code=CODE,
    kind=KIND,
    summary="no warm-up at a high LR; LR jumps that line up with trouble",
    doc=__doc__ or "",
    check=check,
    config=Config,
)
