"""rl-nonfinite (SD002): NaN or Inf in any metric an RL run logs, the reward included.

What it detects
    Non-finite values in every series of an RL run other than the ones ``nonfinite`` (SD001)
    already covers (``train/loss``, ``val/loss``, ``train/grad_norm``): the reward and each reward
    function, KL, entropy, the policy objective, lengths, clip fractions, critic series. One
    finding per metric with the first step and the count.

Why it matters
    RL trainers hide non-finite values in ways pre-training logs do not: TRL turns a +inf reward
    into zero advantages, so the loss stays finite while ``reward`` is inf and the batch teaches
    nothing (or everything, once a NaN reaches the weights); HF's ``logging_nan_inf_filter``
    replaces a NaN loss with the running average, so the reward or KL is often the only place the
    failure shows.

How it is computed
    Every series of the run, whatever its name, except the three above. Severity ``error`` for the
    reward, reward functions, score, KL, entropy and objective (the quantities the update is built
    from); ``warning`` for the rest (lengths, clip fractions, timings: bookkeeping that can be NaN
    when a batch is empty).

Known false positives
    Trainers that log NaN for "not computed" (a std over one sample, a min over an empty set)
    look like real NaNs; the ``warning`` level for bookkeeping series reflects that.

References
    TRL GRPO reward normalisation (advantages of a group with an infinite reward are NaN/0);
    huggingface/trl #6702 (``logging_nan_inf_filter`` hides a NaN GRPO step).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stabdiag.detectors import _stats as st
from stabdiag.detectors import rl_common as rc
from stabdiag.detectors._common import finding
from stabdiag.detectors.base import Detector
from stabdiag.findings import Finding, Severity
from stabdiag.table import GRAD_NORM, TRAIN_LOSS, VAL_LOSS, RunData

CODE, KIND = "SD002", "rl-nonfinite"
_COVERED = frozenset({TRAIN_LOSS, VAL_LOSS, GRAD_NORM})
_CORE = (rc.REWARD, rc.SCORE, rc.KL, rc.ENTROPY, rc.LOSS, rc.PREF_LOSS, rc.REWARD_FN_PREFIX)


@dataclass(frozen=True, kw_only=True)
class Config:
    """The rl-nonfinite check has no threshold: any non-finite value of a judged RL metric counts."""


DEFAULT = Config()


def check(run: RunData, cfg: Config = DEFAULT) -> list[Finding]:
    if not rc.is_rl(run):
        return []
    out: list[Finding] = []
    for metric, s in run.series.items():
        if metric in _COVERED or not len(s):
            continue
        bad = ~np.isfinite(s.values)
        n = int(bad.sum())
        if not n:
            continue
        steps = s.steps[bad]
        kinds = sorted(
            {"nan" if np.isnan(v) else ("+inf" if v > 0 else "-inf") for v in s.values[bad][:1000]}
        )
        core = metric.startswith(_CORE) and "/std" not in metric or metric == rc.REWARD_STD
        sev = Severity.ERROR if core else Severity.WARNING
        note = ""
        if metric in (rc.REWARD, rc.SCORE) or metric.startswith(rc.REWARD_FN_PREFIX):
            fin = rc.finite(run, rc.LOSS)
            if fin is not None and len(fin) == len(run.get(rc.LOSS)):
                note = " while the policy loss stayed finite (TRL zeroes the advantages of such groups)"
        msg = (
            f"{metric} was non-finite ({'/'.join(kinds)}) at {n} of {len(s)} log points "
            f"({st.pct(n / len(s))}), first at step {int(steps[0])}{note}."
        )
        out.append(
            finding(
                CODE,
                KIND,
                run,
                severity=sev,
                metric=metric,
                step_start=int(steps[0]),
                step_end=int(steps[-1]),
                message=msg,
                evidence={
                    "first_step": int(steps[0]),
                    "count": n,
                    "fraction": n / len(s),
                    "values": kinds,
                    "steps": st.steps_list(steps),
                },
            )
        )
    return out


DETECTOR = Detector(
    code=CODE,
    kind=KIND,
    summary="RL: NaN/Inf in any logged metric (reward, KL, ...)",
    doc=__doc__ or "",
    check=check,
    config=Config,
)
