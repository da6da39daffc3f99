"""rl-zero-signal (SD704): every group's rewards are equal, so the policy gradient is zero.

What it detects
    Stretches where the run has no learning signal: TRL ``frac_reward_zero_std`` >= ``degenerate``
    (0.9, almost every group of ``num_generations`` completions scored alike), ``reward_std`` ~ 0,
    every reward function's ``rewards/<fn>/std`` ~ 0, or verl's ``critic/score/max`` equal to
    ``critic/score/min``. It says whether the task is too easy (every completion passes) or too
    hard / the grader is broken (none passes), from the reward level during the stretch.

Why it matters
    Group-relative methods (GRPO, RLOO, DAPO) compute the advantage of a completion against the
    others of its group. When all rewards of a group are equal, every advantage is 0 and the
    group contributes nothing but the KL term: the run spends its compute and learns nothing. The
    two causes need opposite fixes (harder vs easier prompts, or a working verifier), and the
    bare zero-std fraction cannot tell them apart.

How it is computed
    A log point is degenerate when any available signal says so (thresholds above; "~ 0" is
    1e-6 of the reward's scale). The longest stretch of degenerate points (gaps of up to 2 points
    merged) must cover at least ``min_frac`` (25 %) of the run: ``warning``, ``error`` from
    ``error_frac`` (50 %). The pass rate is judged from the median reward in the stretch: at or
    below 0 is "none pass"; at the run's maximum, when that is 1 or more (a 0-1 reward) or the
    reward ever was lower, is "all pass"; at the run's minimum is "none pass"; else "unknown".
    RLOO's ``frac_reward_zero_std`` is taken after the KL penalty (never exactly 0 with
    ``beta`` > 0), so the per-function stds are used as well; RLOO's loss is ~1e-9 by construction
    and is not used.

Known false positives
    Continuous rewards rounded to a few values (a 0-10 grader) produce equal rewards in small
    groups by chance; that is real lost signal, but raising ``num_generations`` may be the fix
    rather than changing the task.

References
    Yu et al. 2025 (DAPO), arXiv:2503.14476, section 3.2 (dynamic sampling drops groups whose
    accuracy is 0 or 1); TRL GRPO docs (``frac_reward_zero_std``); Shao et al. 2024
    (DeepSeekMath, GRPO), arXiv:2402.03300.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stabdiag import words
from stabdiag.detectors import _stats as st
from stabdiag.detectors import rl_common as rc
from stabdiag.detectors._common import finding
from stabdiag.detectors.base import Detector
from stabdiag.findings import Finding, Severity, Skipped
from stabdiag.table import GRAD_NORM, RunData, Series

CODE, KIND = "SD704", "rl-zero-signal"


@dataclass(frozen=True, kw_only=True)
class Config:
    """Thresholds of the rl-zero-signal check (``[tool.stabdiag.detectors.rl-zero-signal]``)."""

    degenerate: float = 0.90
    """A log point is degenerate when TRL's ``frac_reward_zero_std`` is at least this (90 % of the
    groups scored all their completions alike: their advantages are all 0)."""
    min_frac: float = 0.25
    """The longest degenerate stretch must cover this share (25 %) of the run: a warning."""
    error_frac: float = 0.50
    """A degenerate stretch over this share (half) of the run is an error: most of the compute
    learned nothing."""
    rel_eps: float = 1e-6
    """A reward std (or per-function std) below this share of the reward's scale counts as 0."""


DEFAULT = Config()


def _on(grid: np.ndarray, s: Series, fill: float = np.nan) -> np.ndarray:
    out = np.full(len(grid), fill)
    _, ig, is_ = np.intersect1d(grid, s.steps, return_indices=True)
    out[ig] = s.values[is_]
    return out


def _signals(run: RunData, cfg: Config) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """(steps, degenerate mask, names of the signals used)."""
    used: dict[str, Series] = {}
    for m in (rc.FRAC_ZERO_STD, rc.REWARD_STD, "rl/score_max"):
        s = rc.finite(run, m)
        if s is not None:
            used[m] = s
    fn_stds = {
        k: v.finite
        for k, v in run.with_prefix(rc.REWARD_FN_PREFIX).items()
        if k.endswith("/std") and len(v.finite)
    }
    if not used and not fn_stds:
        return None
    grid = np.unique(np.concatenate([s.steps for s in [*used.values(), *fn_stds.values()]]))
    rw = rc.reward_series(run)
    scale = max(1.0, float(np.nanmax(np.abs(rw[1].values)))) if rw is not None else 1.0
    eps = cfg.rel_eps * scale
    deg = np.zeros(len(grid), dtype=bool)
    known = np.zeros(len(grid), dtype=bool)
    if rc.FRAC_ZERO_STD in used:
        x = _on(grid, used[rc.FRAC_ZERO_STD])
        known |= np.isfinite(x)
        deg |= x >= cfg.degenerate
    if rc.REWARD_STD in used:
        x = _on(grid, used[rc.REWARD_STD])
        known |= np.isfinite(x)
        deg |= np.abs(x) <= eps
    if "rl/score_max" in used and rc.finite(run, "rl/score_min") is not None:
        x = _on(grid, used["rl/score_max"]) - _on(grid, rc.finite(run, "rl/score_min"))
        known |= np.isfinite(x)
        deg |= np.abs(x) <= eps
    if fn_stds:
        xs = np.vstack([_on(grid, s) for s in fn_stds.values()])
        ok = np.isfinite(xs).all(axis=0)
        known |= ok
        deg |= ok & (np.abs(np.where(ok, xs, 0)) <= eps).all(axis=0)
    names = list(used) + ([f"{len(fn_stds)} x {rc.REWARD_FN_PREFIX}<fn>/std"] if fn_stds else [])
    return grid[known], deg[known], names


def check(run: RunData, cfg: Config = DEFAULT) -> list[Finding] | Skipped:
    if not rc.is_rl(run):
        return []
    sig = _signals(run, cfg)
    if sig is None:
        return DETECTOR.skipped(
            run,
            "no reward spread logged (reward_std, frac_reward_zero_std, "
            "rewards/<fn>/std or critic/score/max|min)",
        )
    steps, deg, used = sig
    n = len(steps)
    if n < rc.MIN_POINTS:
        return DETECTOR.skipped(
            run,
            f"only {words.count(n, 'log point')} with a reward spread; at least {rc.MIN_POINTS} are needed",
        )
    starts, ends = st.merge_segments(*st.segments(deg), gap=2)
    if not len(starts):
        return []
    k = int(np.argmax(ends - starts))
    a, b = int(starts[k]), int(ends[k])
    frac = (b - a + 1) / n
    if frac < cfg.min_frac:
        return []
    sev = Severity.ERROR if frac >= cfg.error_frac else Severity.WARNING
    verdict, level = "unknown", None
    rw = rc.reward_series(run)
    if rw is not None:
        metric, r = rw
        inside = r.values[(r.steps >= steps[a]) & (r.steps <= steps[b])]
        if len(inside):
            level = st.nanmedian(inside)
            lo, hi = float(np.min(r.values)), float(np.max(r.values))
            tol = 1e-6 * max(1.0, abs(hi), abs(lo))
            if level <= tol:
                verdict = "none"
            elif level >= hi - tol and (level >= 1 - tol or hi > lo + tol):
                verdict = "all"  # at the top of what the run ever earned (or of a 0-1 reward)
            elif level <= lo + tol:
                verdict = "none"
    cause = {
        "none": "no completion earns the reward: the task is too hard for the policy, or the grader is broken",
        "all": "every completion earns the full reward: the task is too easy for the policy",
        "unknown": "the rewards within each group are equal",
    }[verdict]
    g = rc.finite(run, GRAD_NORM)
    gtxt = ""
    if g is not None:
        inside = g.values[(g.steps >= steps[a]) & (g.steps <= steps[b])]
        if len(inside):
            gtxt = f"; grad norm median {st.fmt(st.nanmedian(inside))} there"
    lvl = f" (reward median {st.fmt(level)})" if level is not None else ""
    msg = (
        f"no learning signal for {st.pct(frac)} of the run (steps {int(steps[a])}-{int(steps[b])}): "
        f"{cause}{lvl}{gtxt}."
    )
    return [
        finding(
            CODE,
            KIND,
            run,
            severity=sev,
            metric=rc.REWARD_STD if rc.REWARD_STD in used else rc.FRAC_ZERO_STD,
            step_start=int(steps[a]),
            step_end=int(steps[b]),
            message=msg,
            evidence={"fraction": frac, "pass": verdict, "reward_level": level, "signals": used},
        )
    ]


DETECTOR = Detector(
    code=CODE,
    kind=KIND,
    summary="RL: equal rewards in every group, nothing is learnt",
    doc=__doc__ or "",
    check=check,
    config=Config,
)
