"""rl-kl-blowup (SD701): the policy runs away from its reference while the reward does not improve.

What it detects
    ``rl/kl`` (KL of the policy to the reference model, per token: TRL GRPO/RLOO ``kl``, verl
    ``actor/kl_loss``, OpenRLHF ``kl``) that ends past ``bound`` (1 nat per token), or grows by
    ``growth`` (100x) or more from its early level to past ``bound / 10``, while the reward
    (``rl/score`` when logged, else ``rl/reward``) stalls or falls over the same stretch.

Why it matters
    The KL penalty (TRL ``beta``, verl ``kl_loss_coef``) is what keeps an RL-tuned model close to
    the model it started from. A KL that explodes without a reward to show for it means the
    optimiser found a direction that moves the policy a lot and helps nothing: degenerate text,
    reward hacking, or an LR far too high for RL. It rarely comes back on its own.

How it is computed
    The early level is the median of the 10-25 % quantile of the run's points (KL is exactly 0 at
    the first step, when policy and reference are the same model, so the very start is skipped);
    the late level the median of the last 20 %. The reward gain is late minus early reward median
    (the reward before the KL onset, at least max(5, 10 %) points, so a blow-up within the first
    steps is still compared with a reward level, not one point),
    judged against the reward's own spread (robust sigma of its step-to-step noise): a gain under
    ``min_gain`` sigmas is a stall, a loss of more than ``min_gain`` sigmas a fall. KL past
    ``bound`` with a falling reward is ``error``; past ``bound`` or a 100x growth past
    ``bound / 10`` with a stalled reward is ``warning``; a KL that bought a rising reward is not a
    finding. A run with no reward series is judged on KL alone (``warning``).
    Benign: no ``kl`` series at all (TRL logs none when ``beta`` = 0, its default since 0.19).

Known false positives
    A run whose reward is reported only after a KL penalty (PPO's ``rlhf_reward``) can look stalled
    because the penalty grows with the KL; the score before the penalty is preferred when logged.
    Sequence-level KL (summed over tokens, e.g. old TRL PPO ``objective/kl``) is larger by the
    completion length: raise ``bound`` for such logs.

References
    Ouyang et al. 2022 (InstructGPT) and Ziegler et al. 2019, the KL-penalised objective; TRL
    ``GRPOConfig.beta`` docs (0.04 in DeepSeekMath / Shao et al. 2024, 0.0 by default in TRL);
    verl ``actor_rollout_ref.actor.kl_loss_coef`` (0.001 in its GRPO examples).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stabdiag.detectors import _stats as st
from stabdiag.detectors import rl_common as rc
from stabdiag.detectors._common import finding
from stabdiag.detectors.base import Detector
from stabdiag.findings import Finding, Severity, Skipped
from stabdiag.table import RunData

CODE, KIND = "SD701", "rl-kl-blowup"


@dataclass(frozen=True, kw_only=True)
class Config:
    """Thresholds of the rl-kl-blowup check (``[tool.stabdiag.detectors.rl-kl-blowup]``)."""

    bound: float = 1.0
    """KL to the reference (nats per token) past which the policy has left it: at 1 nat a sampled
    token keeps on average about e^-1 of the reference's probability. Past it with a falling reward
    is an error, with a stalled reward a warning."""
    growth: float = 100.0
    """Growth of the KL from its early to its late level (100x, to past ``bound`` / 10) that counts
    as a blow-up even below ``bound``."""
    min_gain: float = 1.0
    """Reward gain, in noise sigmas of the reward, below which the reward has stalled (a loss of
    more than this is a fall); a KL that bought a rising reward is not a finding."""


DEFAULT = Config()


def _reward_gain(run: RunData, lo: int, hi: int) -> tuple[str, float, float, float] | None:
    """(metric, early, late, gain in noise sigmas) of the reward between steps lo..hi."""
    rs = rc.reward_series(run)
    if rs is None:
        return None
    metric, s = rs
    k = max(5, len(s) // 10)  # a reward level needs a few points, even when KL blew up at once
    early = s.values[s.steps <= lo][-max(k, int(np.sum(s.steps <= lo)) // 2) :]
    if len(early) < k:
        early = s.values[:k]
    late = s.values[s.steps >= hi]
    if not len(late):
        late = s.values[-max(2, len(s) // 5) :]
    e, la = st.nanmedian(early), st.nanmedian(late)
    sigma = st.robust_sigma(np.diff(s.values)) / np.sqrt(2) if len(s) > 3 else 0.0
    sigma = max(sigma, 1e-12)
    return metric, e, la, (la - e) / sigma


def check(run: RunData, cfg: Config = DEFAULT) -> list[Finding] | Skipped:
    if not rc.is_rl(run):
        return []
    s = rc.need(run, rc.KL, "TRL logs no kl when beta = 0")
    if isinstance(s, str):
        return DETECTOR.skipped(run, s)
    v, steps = s.values, s.steps
    n = len(v)
    early = st.nanmedian(v[int(0.1 * n) : max(int(0.25 * n), int(0.1 * n) + 2)])
    late = rc.tail(v, 0.2)
    peak = float(np.max(v))
    floor = max(early, 1e-6)
    growth = late / floor
    past = late > cfg.bound
    grew = growth >= cfg.growth and late > cfg.bound / 10
    if not (past or grew):
        return []
    sm = rc.smooth(v)
    thr = cfg.bound if past else max(cfg.bound / 10, floor * cfg.growth**0.5)
    i0 = max(st.first_index(sm > thr, 0), st.first_index(v > thr, 0))  # a raw point above it, too
    onset = int(steps[i0]) if i0 >= 0 else int(steps[n // 2])
    rg = _reward_gain(run, onset, int(steps[-max(1, n // 5)]))
    stalled = rg is None or rg[3] < cfg.min_gain
    if not stalled:
        return []  # the policy moved far, and the reward shows what it bought
    falling = rg is not None and rg[3] <= -cfg.min_gain
    sev = Severity.ERROR if past and falling else Severity.WARNING
    if rg is None:
        rtxt = "; no reward series to compare with"
    else:
        trend = "fell" if falling else "stalled"
        rtxt = f"; meanwhile {rg[0]} {trend} ({st.fmt(rg[1])} -> {st.fmt(rg[2])})"
    why = (
        f"ends at {st.fmt(late)} nats/token, past the {st.fmt(cfg.bound)} bound"
        if past
        else f"grew {st.fmt(growth)}x from its early level {st.fmt(early)} to {st.fmt(late)}"
    )
    msg = f"KL to the reference {why} (peak {st.fmt(peak)}, above {st.fmt(thr)} from step {onset}){rtxt}."
    return [
        finding(
            CODE,
            KIND,
            run,
            severity=sev,
            metric=rc.KL,
            step_start=onset,
            step_end=int(steps[-1]),
            message=msg,
            evidence={
                "kl_early": early,
                "kl_late": late,
                "kl_peak": peak,
                "growth": growth,
                "bound": cfg.bound,
                "reward_metric": rg[0] if rg else None,
                "reward_early": rg[1] if rg else None,
                "reward_late": rg[2] if rg else None,
                "reward_gain_sigmas": rg[3] if rg else None,
            },
        )
    ]


DETECTOR = Detector(
    code=CODE,
    kind=KIND,
    summary="RL: KL to the reference blows up while reward stalls",
    doc=__doc__ or "",
    check=check,
    config=Config,
)
