"""stall (SD103): the loss stops improving early and stays flat, typically at a chance level.

What it detects
    A training loss that goes flat within the first ``max_onset_frac`` (35 %) of the run and stays
    flat to the end, with evidence that the model stopped learning rather than converged: the flat
    level is a chance level (ln 2, ln k for small k, ln of a common vocabulary size), the grad norm
    collapsed, or the loss noise collapsed (a model emitting a constant distribution).

Why it matters
    A collapsed run raises no NaN and no spike, so spike rules never see it; it silently burns the
    budget (a Lion/signum run at LR 3e-3 sat at ln 2 = 0.693 for 60k steps with chance accuracy).

How it is computed
    Smoothed level = centred rolling median (window n/50, >= 5). Flat onset = the first point after
    which the smoothed level never leaves tail level +- ``flat_rel`` (2 %), tail = median of the last
    20 %. Signals: chance level (|tail - ln k| <= ``chance_rel`` = 1.5 % for k = 2..10 or a common
    vocabulary size), grad collapse (median grad norm over the flat part <= ``grad_collapse``
    (0.1) x its median over the first 10 % of points), noise collapse (relative MAD-sigma of the flat
    part around the smoothed trend <= ``noise_collapse`` (0.2) x that of the part before it, which
    must be >= 0.5 %). The flat band widens to ``band_sigmas`` (4) x the noise a w-point median of
    the per-point noise keeps, so a noisy per-batch loss is judged by its level, not its jitter.
    When the loss went flat within ``early_frac`` (20 %) of the run: the LR still high (median over
    the onset >= ``lr_high`` (50 %) of its peak), the update/param ratio collapsed
    (<= ``update_collapse`` (0.1) x its first 10 %) and the validation loss flat (< ``val_progress``
    (1 %) better over the flat part) are further signals; "LR still high" needs one of the other
    two (a run that stopped learning while the optimizer kept pushing, e.g. a deep post-LN model
    without warm-up stuck at the unigram level). Flat early + 2 signals: ``error``; flat early + 1
    signal: ``info`` (a converged loss can sit near ln k by coincidence). Noise collapse only counts
    next to a chance level or a grad collapse: a flat, quiet loss alone is a converged fine-tune or
    an end-of-training plateau / cosine tail, never a finding.

Known false positives
    A fine-tune whose converged loss happens to sit at ln k with a grad norm that fell 10x after the
    first steps; balanced binary tasks whose best achievable loss is near ln 2.

References
    llm-foundry KillLossSpike ``HighLossError`` (loss stuck above a cap for half the window);
    Wortsman et al. 2023 (arXiv 2309.14322) on LR-induced collapse; stabdiag research note
    formats.md section 11 item 10 (W&B Lion run stuck at ln 2 with collapsing grad norm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stabdiag.detectors import _stats as st
from stabdiag.detectors._common import finding, loss_metric, usable
from stabdiag.detectors.base import Detector
from stabdiag.findings import Finding, Severity, Skipped
from stabdiag.table import GRAD_NORM, LR, TRAIN_LOSS, UPDATE_RATIO, VAL_LOSS, RunData

CODE, KIND = "SD103", "stall"

# Vocabulary sizes of common tokenizers (GPT-2, padded GPT-2, Llama 1/2, Mistral, Llama 3, Qwen 2,
# cl100k, T5, BERT): ln(V) is the loss of a uniform prediction over them.
VOCAB_SIZES = (50257, 50304, 32000, 32768, 128256, 151936, 100277, 32128, 30522, 65536, 256000)


@dataclass(frozen=True, kw_only=True)
class Config:
    """Thresholds of the stall check (``[tool.stabdiag.detectors.stall]``)."""

    min_points: int = 30
    """Finite loss points needed to judge a plateau; fewer are "not checked"."""
    max_onset_frac: float = 0.35
    """Only a loss that went flat within the first 35 % of the run and stayed flat is a stall; a
    later plateau is convergence or a schedule's tail."""
    flat_rel: float = 0.02
    """Flat means the smoothed loss never leaves the tail level (median of the last 20 %) by more
    than this share (2 %) from the onset on."""
    chance_rel: float = 0.015
    """The flat level is a chance level when within this share (1.5 %) of ln k (k = 2..10) or of
    ln of a common vocabulary size: the loss of a uniform guess."""
    grad_collapse: float = 0.1
    """Grad-norm collapse: its median over the flat part is at most this multiple (0.1) of its
    median over the first 10 % of points."""
    noise_collapse: float = 0.2
    """Noise collapse: the flat part's relative noise around the trend is at most this multiple
    (0.2) of the noise before it (a model emitting a constant distribution). Counts only next to a
    chance level or a grad collapse."""
    min_noise: float = 0.005
    """Noise collapse needs at least this relative noise (0.5 %) before the plateau: a curve that
    was always smooth has nothing to collapse from."""
    band_sigmas: float = 4.0
    """The flat band widens to this many sigmas of the noise left after a w-point median, so a noisy
    per-batch loss is judged by its level, not its jitter."""
    early_frac: float = 0.2
    """A loss flat from this early (20 % of the run) can take the further signals below (LR still
    high, update ratio collapsed, validation loss flat)."""
    lr_high: float = 0.5
    """The LR over the flat onset is still high when at least this share (half) of its peak; it
    counts only next to another signal (the optimizer kept pushing and nothing moved)."""
    update_collapse: float = 0.1
    """Update/param-ratio collapse: over the flat part at most this multiple (0.1) of its first
    10 %."""
    val_progress: float = 0.01
    """The validation loss is flat when it improved by less than this share (1 %) over the flat part."""


DEFAULT = Config()


def chance_level(level: float, rel: float, vocab: int | None = None) -> tuple[str, float] | None:
    """The chance level ``level`` sits on (name, value), or None."""
    cands = [(f"ln {k}", math.log(k)) for k in range(2, 11)]
    cands += [(f"ln {v} (vocab)", math.log(v)) for v in ((vocab,) if vocab else ()) + VOCAB_SIZES]
    for name, c in cands:
        if abs(level - c) <= rel * c:
            return name, c
    return None


def _rel_sigma_of(resid: np.ndarray, level: np.ndarray) -> float:
    m = st.nanmedian(level)
    return st.robust_sigma(resid) / abs(m) if m else math.nan


def check(run: RunData, cfg: Config = DEFAULT) -> list[Finding] | Skipped:
    metric = loss_metric(run)
    s = usable(run, metric)
    if s is None:
        return DETECTOR.skipped(run, f"no {TRAIN_LOSS} or {VAL_LOSS} series")
    steps, x, w, smooth = st.loss_trend(s.values, s.steps)  # the trend divergence judges too
    n = len(x)
    if n < cfg.min_points:
        return DETECTOR.skipped(
            run, f"{metric} has too few finite points ({cfg.min_points} needed)"
        )
    tail = float(np.median(x[-max(5, n // 5) :]))
    # The band a flat smoothed level stays in: 2 % of the level, or what the per-point noise leaves
    # in a median of w points (a noisy per-batch loss must not look like it is still moving).
    sigma = max(
        st.robust_sigma(x - smooth), st.DIFF_TO_SIGMA * float(np.median(np.abs(np.diff(x))))
    )
    band = max(cfg.flat_rel * abs(tail), cfg.band_sigmas * 1.25 * sigma / math.sqrt(w))
    dev = np.abs(smooth - tail) > band
    outside = np.flatnonzero(dev)
    onset = int(outside[-1]) + 1 if outside.size else 0
    if onset >= n or onset > cfg.max_onset_frac * n:
        return []
    signals: dict[str, object] = {}
    vocab = run.meta.get("vocab_size") if isinstance(run.meta.get("vocab_size"), int) else None
    ch = chance_level(tail, cfg.chance_rel, vocab)
    if ch:
        signals["chance_level"] = ch[0]
    g = usable(run, GRAD_NORM, 10)
    g_early = g_flat = None
    if g is not None:
        gv = st.clean(g.values)
        g_early = st.nanmedian(gv[: max(5, len(gv) // 10)])
        g_flat = st.nanmedian(gv[g.steps >= steps[onset]])
        if g_early > 0 and g_flat <= cfg.grad_collapse * g_early:
            signals["grad_collapse"] = g_flat / g_early
    resid = x - smooth  # noise around the trend, so a steep early descent is not "noise"
    n_before = _rel_sigma_of(resid[:onset], x[:onset]) if onset >= 5 else math.nan
    n_flat = _rel_sigma_of(resid[onset:], x[onset:])
    if (
        math.isfinite(n_before)
        and n_before >= cfg.min_noise
        and n_flat <= cfg.noise_collapse * n_before
    ):
        signals["noise_collapse"] = n_flat / n_before
    early = onset <= cfg.early_frac * n
    lr = usable(run, LR, 3)
    lr_flat = lr_peak = None
    if lr is not None and early:
        lv = st.clean(lr.values)
        lr_peak = float(np.nanmax(lv))
        lr_flat = st.value_at(lr.steps, lv, int(steps[onset]))
        if lr_flat is not None and lr_peak > 0 and lr_flat >= cfg.lr_high * lr_peak:
            signals["lr_still_high"] = lr_flat / lr_peak
    u = usable(run, UPDATE_RATIO, 10)
    if u is not None:
        uv = st.clean(u.values)
        u_early = st.nanmedian(uv[: max(3, len(uv) // 10)])
        u_flat = st.nanmedian(uv[u.steps >= steps[onset]])
        if u_early > 0 and u_flat <= cfg.update_collapse * u_early:
            signals["update_collapse"] = u_flat / u_early
    v = usable(run, VAL_LOSS, 3) if metric == TRAIN_LOSS else None
    if v is not None and "lr_still_high" in signals:
        vv = v.values[np.isfinite(v.values) & (v.steps >= steps[onset])]
        if len(vv) >= 3 and float(np.min(vv[1:])) >= (1 - cfg.val_progress) * float(vv[0]):
            signals["val_flat"] = float(vv[-1] / vv[0])
    pushed = "lr_still_high" in signals and bool(signals.keys() & {"update_collapse", "val_flat"})
    if not pushed:  # "LR still high" only speaks next to a sign the model stopped learning
        for k in ("lr_still_high", "update_collapse", "val_flat"):
            signals.pop(k, None)
    if not signals.keys() & {"chance_level", "grad_collapse"} and not pushed:
        return []  # a flat, quiet loss alone is a converged run, not a stall
    sev = Severity.ERROR if len(signals) >= 2 else Severity.INFO
    why = []
    if "chance_level" in signals:
        why.append(f"at chance level {signals['chance_level']}")
    if "grad_collapse" in signals:
        why.append(f"grad norm collapsed {st.fmt(g_early)} -> {st.fmt(g_flat)}")
    if "noise_collapse" in signals:
        why.append("loss noise collapsed")
    if "lr_still_high" in signals:
        why.append(
            f"while the LR was still {st.fmt(lr_flat)} at step {int(steps[onset])}, "
            f"{st.pct(signals['lr_still_high'])} of its peak {st.fmt(lr_peak)}"
        )
    if "update_collapse" in signals:
        why.append(
            f"update/param ratio fell to {st.pct(signals['update_collapse'])} of its early level"
        )
    if "val_flat" in signals:
        why.append("the validation loss stopped improving too")
    name = "training loss" if metric == TRAIN_LOSS else "validation loss"
    msg = (
        f"{name} stopped improving at step {int(steps[onset])} ({100 * onset / n:.0f}% into the run) "
        f"and stayed flat at {st.fmt(tail)} (median of the last 20% of points, computed; {', '.join(why)})."
    )
    return [
        finding(
            CODE,
            KIND,
            run,
            severity=sev,
            metric=metric,
            step_start=int(steps[onset]),
            step_end=int(steps[-1]),
            message=msg,
            evidence={
                "flat_level": tail,
                "onset_step": int(steps[onset]),
                "onset_fraction": onset / n,
                "start_level": float(np.median(x[: max(5, n // 20)])),
                "chance_level": ch[0] if ch else None,
                "grad_norm_early": g_early,
                "grad_norm_flat": g_flat,
                "signals": sorted(signals),
                "lr_peak": lr_peak,
                "lr_flat": lr_flat,
            },
        )
    ]


DETECTOR = Detector(
    code=CODE,
    kind=KIND,
    summary="loss stops improving early and stays flat far above its trend",
    doc=__doc__ or "",
    check=check,
    config=Config,
)
