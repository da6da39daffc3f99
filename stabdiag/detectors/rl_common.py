"""What the RL detectors share: the canonical ``rl/...`` names they read and small robust helpers.

The names are produced by the RL section of ``sources/aliases.py`` (a test pins that every name
here is one the alias table can produce). A run is an RL run when it carries any ``rl/`` series;
the RL detectors say nothing about other runs (they are not "not checked" there: the checks do
not apply), and on an RL run a missing series is a ``Skipped`` naming what was not logged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stabdiag import words
from stabdiag.detectors import _stats as st
from stabdiag.findings import Skipped
from stabdiag.table import RunData, Series

LOSS = "rl/loss"
KL = "rl/kl"
UPDATE_KL = "rl/update_kl"
ENTROPY = "rl/entropy"
REWARD = "rl/reward"
SCORE = "rl/score"
REWARD_STD = "rl/reward_std"
FRAC_ZERO_STD = "rl/frac_reward_zero_std"
REWARD_FN_PREFIX = "rl/rewards/"
LENGTH = "rl/length/mean"
LENGTH_MAX = "rl/length/max"
CLIPPED = "rl/length/clipped_ratio"
CLIPFRAC = "rl/clipfrac"
CLIP_LOW = "rl/clipfrac/low_mean"
CLIP_HIGH = "rl/clipfrac/high_mean"
LOGP_DIFF = "rl/logp_diff/mean"
LOGP_DIFF_MAX = "rl/logp_diff/max"
IS_MEAN = "rl/is_ratio/mean"
IS_MIN = "rl/is_ratio/min"
IS_MAX = "rl/is_ratio/max"
ROLLOUT_KL = "rl/rollout_kl"
PROB_DIFF = "rl/prob_diff/mean"
VALUE_LOSS = "rl/value/loss"
EXPLAINED_VAR = "rl/value/explained_var"
PREF_LOSS = "rl/pref/loss"
PREF_ACC = "rl/pref/accuracy"
PREF_MARGIN = "rl/pref/margin"
EVAL_PREF_LOSS = "rl/eval/pref/loss"
EVAL_PREF_ACC = "rl/eval/pref/accuracy"

NAMES = (
    LOSS,
    KL,
    UPDATE_KL,
    ENTROPY,
    REWARD,
    SCORE,
    REWARD_STD,
    FRAC_ZERO_STD,
    LENGTH,
    LENGTH_MAX,
    CLIPPED,
    CLIPFRAC,
    CLIP_LOW,
    CLIP_HIGH,
    LOGP_DIFF,
    LOGP_DIFF_MAX,
    IS_MEAN,
    IS_MIN,
    IS_MAX,
    ROLLOUT_KL,
    PROB_DIFF,
    VALUE_LOSS,
    EXPLAINED_VAR,
    PREF_LOSS,
    PREF_ACC,
    PREF_MARGIN,
    EVAL_PREF_LOSS,
    EVAL_PREF_ACC,
)

MIN_POINTS = 8  # fewer log points than this cannot show a trend (a run that crashed early)


def is_rl(run: RunData) -> bool:
    return any(k.startswith("rl/") and len(v) for k, v in run.series.items())


def finite(run: RunData, metric: str) -> Series | None:
    """The finite part of a series, or None when the run does not log it."""
    s = run.get(metric)
    if s is None:
        return None
    f = s.finite
    return f if len(f) else None


def need(run: RunData, metric: str, why: str = "") -> Series | str:
    """The finite series with at least MIN_POINTS points, or the reason it cannot be judged."""
    s = run.get(metric)
    if s is None:
        return f"no {metric} series" + (f" ({why})" if why else "")
    f = s.finite
    if len(f) < MIN_POINTS:
        return f"only {len(f)} finite {metric} {words.plural('point', len(f))}; at least {MIN_POINTS} are needed"
    return f


def head(v: np.ndarray, frac: float = 0.1, floor: int = 3) -> float:
    """Median of the first ``frac`` of the points (at least ``floor``)."""
    n = max(floor, int(round(len(v) * frac)))
    return st.nanmedian(v[:n])


def tail(v: np.ndarray, frac: float = 0.1, floor: int = 3) -> float:
    n = max(floor, int(round(len(v) * frac)))
    return st.nanmedian(v[-n:])


def smooth(v: np.ndarray, window: int | None = None) -> np.ndarray:
    """Centred rolling median: a trend that single noisy log points cannot move."""
    w = window or max(3, min(25, len(v) // 10 * 2 + 1))
    return st.rolling_median(v, w, center=True)


def rank_corr(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation (ranks, ties averaged); NaN when either side is constant."""
    if len(a) < 3:
        return float("nan")
    ra = _ranks(a)
    rb = _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x), dtype=np.float64)
    r[order] = np.arange(len(x), dtype=np.float64)
    # average ties
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=r)
    return sums[inv] / counts[inv]


def aligned(a: Series, b: Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values of two series at their common steps: (steps, a, b)."""
    common, ia, ib = np.intersect1d(a.steps, b.steps, return_indices=True)
    return common, a.values[ia], b.values[ib]


def longest_run(mask: np.ndarray) -> tuple[int, int]:
    """(start, end) indices (inclusive) of the longest stretch of True; (-1, -1) if none."""
    starts, ends = st.segments(mask)
    if not len(starts):
        return -1, -1
    i = int(np.argmax(ends - starts))
    return int(starts[i]), int(ends[i])


def reward_series(run: RunData) -> tuple[str, Series] | None:
    """The reward to judge progress by: the score before any KL penalty when logged."""
    for m in (SCORE, REWARD):
        s = finite(run, m)
        if s is not None and len(s) >= 3:
            return m, s
    return None


# The RL kinds that judge a run's behaviour (rl-nonfinite checks values, not behaviour).
JUDGING_KINDS = (
    "rl-kl-blowup",
    "rl-entropy-collapse",
    "rl-length-hacking",
    "rl-zero-signal",
    "rl-clip-saturation",
    "rl-logprob-mismatch",
    "rl-value-divergence",
    "rl-preference-overfit",
)


def judgement(run: RunData, skipped: Sequence[Skipped]) -> tuple[bool, str] | None:
    """Whether an RL run was judged (None for other runs): a policy objective is not a language-
    model loss, so an RL run without ``train/loss`` is judged when its RL checks ran."""
    if not is_rl(run):
        return None
    skips = {s.kind: s.reason for s in skipped if s.run == run.name and s.kind.startswith("rl-")}
    ran = [k for k in JUDGING_KINDS if k not in skips]
    if ran:  # (a --select that leaves out every RL kind is not visible here)
        return (
            True,
            "judged as an RL run on its rl/ series (a policy objective is not a language-model loss)",
        )
    first = next(iter(skips.values()), "no RL check could run")
    return False, f"not judged: an RL run, but {first}"
