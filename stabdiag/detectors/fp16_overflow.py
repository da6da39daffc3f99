"""fp16-overflow (SD301): loss-scale drops and skipped steps, benign or collapsing.

What it detects
    Dynamic loss scaling events in fp16 runs, read from ``train/loss_scale`` (drops) and
    ``train/skipped_step`` (values > 0 count as skipped; when any are logged they are the events,
    otherwise each scale halving is one). It tells the start-up scale search and the
    scaler's periodic probing (both benign) from clustered overflows and a collapsing scale.

Why it matters
    Users cannot tell "OVERFLOW! Skipping step" at start-up (the scaler searching down from 2^16 or
    2^32) from a run whose scale keeps halving towards 1 (DeepSpeed #931, Apex #864 vs #318). A
    collapsing scale means activations or gradients overflow fp16 on every step: switch to bf16.

How it is computed
    Scale values of -1 ("no scaler") and non-finite values are ignored. Start-up = the first
    max(``startup_steps`` (50), ``startup_frac`` (3 %) of the run) steps. After it: settled scale =
    median scale; reference = the highest scale after start-up. ``error`` when the scale falls to
    <= ``min_scale`` (1, DeepSpeed/Megatron min_loss_scale) or to <= reference / ``collapse_factor``
    (1024 = 10 halvings). ``warning`` when >= ``cluster_count`` (4) drops/skips fall inside any
    ``cluster_steps`` (500) steps after start-up, or the last scale is <= settled / 16. Otherwise
    any events are ``info`` (start-up search, or isolated halvings of a scaler probing upwards every
    growth interval: PyTorch GradScaler 2000 steps, DeepSpeed/Megatron 1000).

Known false positives
    Logs that report the scale only every N steps undercount drops; a counter of skipped
    iterations per log interval is read as that many skips. bf16 runs printing a constant scale give
    no finding.

References
    PyTorch GradScaler (init 2^16, growth 2, backoff 0.5, growth_interval 2000); DeepSpeed
    DynamicLossScaler (2^16, window 1000, hysteresis 2, min_loss_scale 1); Megatron
    DynamicGradScaler (2^32, window 1000, min 1); issues DeepSpeed #931, NVIDIA/apex #864, #318,
    EleutherAI/gpt-neox #291.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stabdiag.detectors import _stats as st
from stabdiag.detectors._common import finding
from stabdiag.detectors.base import Detector
from stabdiag.findings import Finding, Severity, Skipped
from stabdiag.table import LOSS_SCALE, SKIPPED_STEP, RunData, Series

CODE, KIND = "SD301", "fp16-overflow"


@dataclass(frozen=True, kw_only=True)
class Config:
    startup_steps: int = 50
    startup_frac: float = 0.03
    min_scale: float = 1.0
    collapse_factor: float = 1024.0
    decline_factor: float = 16.0
    cluster_steps: int = 500
    cluster_count: int = 4


DEFAULT = Config()


def skip_counts(values: np.ndarray) -> np.ndarray:
    """Skipped-step counts per log point: non-finite -> 0 (missing), capped at 1e6 (a counter)."""
    v = np.where(np.isfinite(values), values, 0.0)
    return np.clip(v, 0.0, 1e6)


def scale_series(run: RunData) -> Series | None:
    """The loss-scale series without "no scaler" (-1) and non-finite entries, or None."""
    s = run.get(LOSS_SCALE)
    if s is None:
        return None
    ok = np.isfinite(s.values) & (s.values > 0)
    return Series(s.steps[ok], s.values[ok]) if ok.any() else None


def overflow_steps(run: RunData) -> np.ndarray:
    """Steps that were (or likely were) skipped by the scaler: skipped_step > 0, or a scale drop."""
    out = []
    sk = run.get(SKIPPED_STEP)
    if sk is not None:
        out.append(sk.steps[skip_counts(sk.values) > 0])
    sc = scale_series(run)
    if sc is not None and len(sc) > 1:
        drop = np.flatnonzero(sc.values[1:] < sc.values[:-1]) + 1
        out.append(sc.steps[drop])
    return np.unique(np.concatenate(out)) if out else np.empty(0, np.int64)


def is_fp16(run: RunData) -> bool:
    """A run with a dynamic loss scaler: the scale varies, or steps were skipped."""
    sc = scale_series(run)
    sk = run.get(SKIPPED_STEP)
    return (sc is not None and bool(np.any(sc.values != sc.values[0]))) or (
        sk is not None and bool(np.any(skip_counts(sk.values) > 0)))


def _max_in_window(steps: np.ndarray, weights: np.ndarray, width: int) -> tuple[int, int]:
    """Largest total weight of events within ``width`` steps, and the step where that window starts."""
    if not len(steps):
        return 0, 0
    csum = np.concatenate([[0], np.cumsum(weights)])
    hi = np.searchsorted(steps, steps + width, side="right")
    tot = csum[hi] - csum[np.arange(len(steps))]
    k = int(np.argmax(tot))
    return int(tot[k]), int(steps[k])


def check(run: RunData, cfg: Config = DEFAULT) -> list[Finding] | Skipped:
    sc = scale_series(run)
    sk = run.get(SKIPPED_STEP)
    if sc is None and sk is None:
        return DETECTOR.skipped(run, f"no {LOSS_SCALE} or {SKIPPED_STEP} series (not an fp16 run, or not logged)")
    # Event list: (step, weight) for each halving or skip.
    ev_steps, ev_w = [], []
    if sc is not None and len(sc) > 1:
        r = sc.values[:-1] / sc.values[1:]
        d = np.flatnonzero(r > 1) + 1
        ev_steps.append(sc.steps[d])
        ev_w.append(np.maximum(1, np.round(np.log2(r[d - 1]))).astype(np.int64))
    n_skipped = 0
    if sk is not None:
        v = skip_counts(sk.values)
        hit = v > 0
        n_skipped = int(np.round(v[hit]).clip(min=1).sum())
        if hit.any():  # skips are the exact events; scale drops between log points are coarser
            ev_steps, ev_w = [], []
            ev_steps.append(sk.steps[hit])
            ev_w.append(np.round(v[hit]).clip(min=1).astype(np.int64))
    steps_all = np.concatenate(ev_steps) if ev_steps else np.empty(0, np.int64)
    w_all = np.concatenate(ev_w) if ev_w else np.empty(0, np.int64)
    order = np.argsort(steps_all, kind="stable")
    steps_all, w_all = steps_all[order], w_all[order]
    if not len(steps_all):
        return []
    lo = min(int(x.steps[0]) for x in (sc, sk) if x is not None)
    hi = max(int(x.steps[-1]) for x in (sc, sk) if x is not None)
    startup_end = lo + max(cfg.startup_steps, int(cfg.startup_frac * (hi - lo)))
    late = steps_all > startup_end
    late_steps, late_w = steps_all[late], w_all[late]
    ev: dict = {"drops_or_skips": int(w_all.sum()), "skipped_steps": n_skipped,
                "late_events": int(late_w.sum()), "first_step": int(steps_all[0]),
                "last_step": int(steps_all[-1]), "startup_end_step": startup_end,
                "min_scale": None, "settled_scale": None, "final_scale": None}
    sev, what = Severity.INFO, ""
    if sc is not None:
        post = sc.values[sc.steps > startup_end]
        post = post if post.size else sc.values
        settled, ref = float(np.median(post)), float(np.max(post))
        mn, final = float(np.min(post)), float(sc.values[-1])
        ev.update(min_scale=mn, settled_scale=settled, final_scale=final, max_scale_after_startup=ref)
        if mn <= cfg.min_scale or mn <= ref / cfg.collapse_factor:
            at = int(sc.steps[sc.steps > startup_end][np.argmin(post)]) if (sc.steps > startup_end).any() else int(sc.steps[np.argmin(sc.values)])
            sev = Severity.ERROR
            what = (f"the fp16 loss scale collapsed from {st.fmt(ref)} to {st.fmt(mn)} "
                    f"({st.plural(round(math.log2(ref / mn)), 'halving')}, by step {at})")
        elif final <= settled / cfg.decline_factor:
            sev = Severity.WARNING
            what = f"the fp16 loss scale kept falling, from a settled {st.fmt(settled)} to {st.fmt(final)} at the end"
    count, wstart = _max_in_window(late_steps, late_w, cfg.cluster_steps)
    if sev < Severity.WARNING and count >= cfg.cluster_count:
        sev = Severity.WARNING
        what = f"{st.plural(count, 'fp16 overflow')} (scale drops/skipped steps) clustered within {cfg.cluster_steps} steps from step {wstart}"
    ev["max_events_in_window"] = count
    if sev == Severity.INFO:
        if late_steps.size:
            what = (f"{st.plural(int(late_w.sum()), 'isolated fp16 loss-scale drop')} after start-up "
                    f"(the scaler probing upwards) and {int(w_all.sum() - late_w.sum())} during start-up: benign")
        else:
            what = (f"{st.plural(int(w_all.sum()), 'fp16 loss-scale drop or skip', 'fp16 loss-scale drops or skips')} "
                    "during the start-up scale search: benign")
    tail = f" ({st.plural(n_skipped, 'skipped step')} in all)" if n_skipped else ""
    return [finding(
        CODE, KIND, run, severity=sev, metric=LOSS_SCALE if sc is not None else SKIPPED_STEP,
        step_start=int(steps_all[0] if sev == Severity.INFO or not late_steps.size else late_steps[0]),
        step_end=int(steps_all[-1]), message=f"{what[0].upper()}{what[1:]}{tail}.", evidence=ev,
    )]


DETECTOR = Detector(code=CODE, kind=KIND, summary="fp16 loss-scale drops and skipped steps: benign search vs collapse",
                    doc=__doc__ or "", check=check, config=Config)
