"""rl-preference-overfit (SD708): DPO memorises its preference pairs while held-out pairs get worse.

What it detects
    A preference run (TRL DPO: ``rewards/accuracies``, ``rewards/margins``, ``eval_loss``,
    ``eval_rewards/accuracies``) whose training reward accuracy sits at ~1.0 (late median >=
    ``train_acc``, 0.98) and whose margins keep growing, while the eval loss rises from its best
    (by ``eval_rise``, 10 %, or back above its first value: every bit of held-out gain given back)
    or the eval accuracy falls from its best
    by ``eval_drop`` (0.05) or more.

Why it matters
    DPO's implicit reward has no bound: once every training pair is ranked right, the loss keeps
    falling only by pushing margins apart, which drives the log-probabilities of both answers down
    and drifts the policy away from the reference with nothing learnt that transfers. Held-out
    preference loss rising is the sign; the best checkpoint is where it was lowest.

How it is computed
    Train accuracy and margin from their late medians (last 20 %); margins "explode" when the late
    margin is at least ``margin_growth`` (3x) the margin when the accuracy first reached
    ``train_acc`` (median of the first 10 % of points from there). Eval loss: its minimum and its
    last value; eval accuracy:
    its maximum and its late median. Eval loss rising and eval accuracy falling together is
    ``error``; one of them, ``warning``. A run without eval series is not judged (not checked):
    over-fitting cannot be told from learning without held-out pairs.

Known false positives
    A small eval set (a handful of pairs) is noisy; the rise must hold at the last eval point.

References
    Rafailov et al. 2023 (DPO), arXiv:2305.18290; Azar et al. 2023 (IPO), arXiv:2310.12036,
    section 4 (DPO over-fits deterministic preferences as margins go to infinity); TRL DPO docs
    (``rewards/margins``, ``rewards/accuracies``).
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
from stabdiag.table import RunData

CODE, KIND = "SD708", "rl-preference-overfit"


@dataclass(frozen=True, kw_only=True)
class Config:
    """Thresholds of the rl-preference-overfit check
    (``[tool.stabdiag.detectors.rl-preference-overfit]``)."""

    train_acc: float = 0.98
    """A train reward accuracy (late median) at or above this has memorised the training pairs;
    below it there is no finding."""
    margin_growth: float = 3.0
    """Margins explode when the late margin is at least this multiple (3x) of the margin when the
    accuracy first reached ``train_acc``."""
    eval_rise: float = 0.10
    """The eval loss rose when its last value is this share (10 %) above its minimum."""
    eval_drop: float = 0.05
    """The eval accuracy fell when its late median is this much (0.05) below its maximum; with the
    eval loss rising too it is an error, one of the two a warning."""


DEFAULT = Config()


def check(run: RunData, cfg: Config = DEFAULT) -> list[Finding] | Skipped:
    if not rc.is_rl(run):
        return []
    acc = rc.finite(run, rc.PREF_ACC)
    if acc is None:
        if rc.finite(run, rc.PREF_LOSS) is None:
            return DETECTOR.skipped(run, "not a preference (DPO) run")
        return DETECTOR.skipped(run, "no rewards/accuracies series")
    eloss, eacc = rc.finite(run, rc.EVAL_PREF_LOSS), rc.finite(run, rc.EVAL_PREF_ACC)
    if eloss is None and eacc is None:
        return DETECTOR.skipped(
            run, "no eval_loss / eval_rewards/accuracies: over-fitting needs held-out pairs"
        )
    if len(acc) < rc.MIN_POINTS:
        return DETECTOR.skipped(run, f"only {words.count(len(acc), 'training accuracy point')}")
    a_late = rc.tail(acc.values, 0.2)
    if a_late < cfg.train_acc:
        return []
    hit = st.first_index(rc.smooth(acc.values) >= cfg.train_acc, 0)
    sat_step = int(acc.steps[max(hit, 0)])
    m = rc.finite(run, rc.PREF_MARGIN)
    m_at = m_late = None
    exploding = True
    if m is not None and len(m) >= 3:
        after = m.values[m.steps >= sat_step]
        m_at = (
            rc.head(after, 0.1) if len(after) else rc.head(m.values)
        )  # early margin once saturated
        m_late = rc.tail(m.values, 0.2)
        exploding = m_at > 0 and m_late >= cfg.margin_growth * m_at
    signs, ev = (
        [],
        {
            "train_accuracy_late": a_late,
            "saturated_at": sat_step,
            "margin_at_saturation": m_at,
            "margin_late": m_late,
        },
    )
    start = None
    if eloss is not None and len(eloss) >= 3:
        i = int(np.argmin(eloss.values))
        best, last = float(eloss.values[i]), float(eloss.values[-1])
        ev |= {
            "eval_loss_best": best,
            "eval_loss_best_step": int(eloss.steps[i]),
            "eval_loss_last": last,
        }
        first = float(eloss.values[0])
        risen = last >= best * (1 + cfg.eval_rise)
        gave_back = first > best and last >= first  # every bit of held-out gain is gone again
        if i < len(eloss) - 1 and last > best + 1e-9 and (risen or gave_back):
            more = f", above its first value {st.fmt(first)}" if gave_back else ""
            signs.append(
                f"eval loss {st.fmt(best)} (step {int(eloss.steps[i])}) -> {st.fmt(last)}{more}"
            )
            start = int(eloss.steps[i])
    if eacc is not None and len(eacc) >= 3:
        j = int(np.argmax(rc.smooth(eacc.values)))
        best_a, late_a = float(rc.smooth(eacc.values)[j]), rc.tail(eacc.values, 0.2)
        ev |= {"eval_accuracy_best": best_a, "eval_accuracy_late": late_a}
        if best_a - late_a >= cfg.eval_drop:
            signs.append(f"eval accuracy {st.fmt(best_a)} -> {st.fmt(late_a)}")
            start = int(eacc.steps[j]) if start is None else start  # the eval-loss best step wins
    if not signs or not exploding:
        return []
    sev = Severity.ERROR if len(signs) == 2 else Severity.WARNING
    mtxt = f", margins {st.fmt(m_at)} -> {st.fmt(m_late)}" if m_late is not None else ""
    msg = (
        f"preference over-fitting: train reward accuracy {st.fmt(a_late)} from step {sat_step}{mtxt}, "
        f"while {' and '.join(signs)}."
    )
    best_step = ev.get("eval_loss_best_step", start)
    return [
        finding(
            CODE,
            KIND,
            run,
            severity=sev,
            metric=rc.EVAL_PREF_LOSS if eloss is not None else rc.EVAL_PREF_ACC,
            step_start=start,
            step_end=int(max(acc.steps[-1], (eloss or eacc).steps[-1])),
            message=msg,
            evidence={**ev, "best_step": best_step},
        )
    ]


DETECTOR = Detector(
    code=CODE,
    kind=KIND,
    summary="DPO: train pairs memorised while eval gets worse",
    doc=__doc__ or "",
    check=check,
    config=Config,
)
