"""rl-logprob-mismatch (SD706): the trainer and the inference engine disagree on the log-probs.

What it detects
    A gap between the log-probabilities the inference engine (vLLM, SGLang) sampled with and the
    ones the trainer computes for the same tokens: TRL ``sampling/sampling_logp_difference/mean``
    (mean |delta log p| per token) and ``sampling/importance_sampling_ratio/*``, verl
    ``rollout_corr/log_ppl_abs_diff``, ``rollout_corr/kl``, ``rollout_corr/rollout_is_*`` and the
    older ``training/rollout_probs_diff_mean``, OpenRLHF ``logprobs_diff``. It fires when one of
    them stays past its threshold (table below) for at least ``min_frac`` (20 %) of the run, or
    over its last 20 %.

Why it matters
    PPO/GRPO assume the samples come from the policy being trained. A trainer/engine gap (bf16 vs
    fp32 kernels, a stale weight sync, an MoE router that picks other experts, a bug in the engine)
    makes every update off-policy in a way the clip does not see; it grows silently until the run
    collapses. Truncated importance sampling corrects a small gap, not a large one.

How it is computed
    Thresholds (``warning`` / ``error``): mean |delta log p| 0.1 / 0.5 nats; |IS-ratio mean - 1|
    0.1 / 0.5; rollout-vs-trainer KL 0.05 / 0.5; mean |delta p| 0.05 / 0.2. A rolling median over
    ~10 % of the points is compared with them. The IS-ratio max is reported against TRL's
    truncation bound (``vllm_importance_sampling_clip_max`` = 3) but not judged alone: single
    tokens far off are expected.

Known false positives
    Runs that deliberately sample from another policy (off-policy buffers, a teacher) have a large
    gap by design.

References
    Yao et al. 2025, "Your Efficient RL Framework Secretly Brings You Off-Policy RL Training"
    (truncated importance sampling); TRL ``GRPOConfig.vllm_importance_sampling_correction`` and
    ``vllm_importance_sampling_clip_max`` (3.0); verl rollout-correction docs
    (``rollout_corr/*`` off-policy diagnostics, healthy rollout/trainer KL near 0.001-0.01).
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

CODE, KIND = "SD706", "rl-logprob-mismatch"


@dataclass(frozen=True, kw_only=True)
class Config:
    """Thresholds of the rl-logprob-mismatch check (``[tool.stabdiag.detectors.rl-logprob-mismatch]``).

    Each signal has a warning and an error level, compared with its rolling median."""

    logp_diff: float = 0.1
    """Mean |delta log p| per token between trainer and inference engine, in nats, at which the gap
    is a warning ..."""
    logp_diff_error: float = 0.5
    """... and an error (the samples are far off-policy)."""
    is_dev: float = 0.1
    """|importance-sampling ratio mean - 1| that is a warning ..."""
    is_dev_error: float = 0.5
    """... and an error: truncated importance sampling corrects a small gap, not this."""
    rollout_kl: float = 0.05
    """KL between the rollout (engine) and trainer distributions that is a warning ..."""
    rollout_kl_error: float = 0.5
    """... and an error."""
    prob_diff: float = 0.05
    """Mean |delta p| per token (verl's ``training/rollout_probs_diff_mean``) that is a warning ..."""
    prob_diff_error: float = 0.2
    """... and an error."""
    min_frac: float = 0.20
    """A signal must stay past its warning level for this share (20 %) of the run, or over its last
    20 %, to be a finding."""


DEFAULT = Config()
_WHAT = {
    rc.LOGP_DIFF: "mean |trainer - engine| log-prob",
    rc.IS_MEAN: "importance-sampling ratio mean",
    rc.ROLLOUT_KL: "rollout-vs-trainer KL",
    rc.PROB_DIFF: "mean |trainer - engine| probability",
}


def _judge(
    metric: str, x: np.ndarray, thr: tuple[float, float], cfg: Config
) -> tuple[Severity, int, int, float] | None:
    sm = rc.smooth(x, max(3, len(x) // 10 | 1))
    over = sm >= thr[0]
    a, b = rc.longest_run(over)
    if a < 0:
        return None
    frac = (b - a + 1) / len(x)
    if frac < cfg.min_frac and b < len(x) - max(2, len(x) // 5):
        return None
    med = st.nanmedian(x[a : b + 1])
    return (Severity.ERROR if med >= thr[1] else Severity.WARNING), a, b, med


def check(run: RunData, cfg: Config = DEFAULT) -> list[Finding] | Skipped:
    if not rc.is_rl(run):
        return []
    signals = {
        rc.LOGP_DIFF: (cfg.logp_diff, cfg.logp_diff_error),
        rc.IS_MEAN: (cfg.is_dev, cfg.is_dev_error),
        rc.ROLLOUT_KL: (cfg.rollout_kl, cfg.rollout_kl_error),
        rc.PROB_DIFF: (cfg.prob_diff, cfg.prob_diff_error),
    }
    present = {m: rc.finite(run, m) for m in signals}
    present = {m: s for m, s in present.items() if s is not None}
    if not present:
        return DETECTOR.skipped(
            run,
            "no trainer-vs-engine log-prob series (logged only when sampling "
            "with vLLM/SGLang and importance-sampling correction)",
        )
    if all(len(s) < rc.MIN_POINTS for s in present.values()):
        return DETECTOR.skipped(run, f"fewer than {rc.MIN_POINTS} log-prob-gap points")
    worst = None
    for m, s in present.items():
        if len(s) < rc.MIN_POINTS:
            continue
        x = np.abs(s.values - 1.0) if m == rc.IS_MEAN else s.values
        j = _judge(m, x, signals[m], cfg)
        if j is not None and (
            worst is None
            or (j[0], j[3] / signals[m][0]) > (worst[1][0], worst[1][3] / signals[worst[0]][0])
        ):
            worst = (m, j, s)
    if worst is None:
        return []
    m, (sev, a, b, med), s = worst
    mx = rc.finite(run, rc.IS_MAX)
    extra = ""
    if mx is not None:
        above = float(np.mean(mx.values > 3.0))
        extra = f"; the IS-ratio max exceeds TRL's truncation bound 3 at {st.pct(above)} of points"
    shown = f"|{st.fmt(med + 1)} - 1|" if m == rc.IS_MEAN else st.fmt(med)
    msg = (
        f"trainer and inference engine disagree: {_WHAT[m]} {shown} (median) over steps "
        f"{int(s.steps[a])}-{int(s.steps[b])}, past the {st.fmt(signals[m][0])} threshold{extra}."
    )
    ev = {"signal": m, "median": med, "threshold": signals[m][0], "signals": sorted(present)}
    return [
        finding(
            CODE,
            KIND,
            run,
            severity=sev,
            metric=m,
            step_start=int(s.steps[a]),
            step_end=int(s.steps[b]),
            message=msg,
            evidence=ev,
        )
    ]


DETECTOR = Detector(
    code=CODE,
    kind=KIND,
    summary="RL: trainer vs inference-engine log-prob gap",
    doc=__doc__ or "",
    check=check,
    config=Config,
)
