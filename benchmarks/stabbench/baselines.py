"""Published spike / overflow rules of production trainers, re-implemented as point flaggers.

Each baseline reads one series of a run and returns a boolean mask of the log points it would
flag (the points where the trainer would skip, clip, log a spike or stop). The scorer groups
flagged points into detections. Rules and defaults are the ones in the research note
``docs/research/detection.md`` sections (a) and (f); where a rule needs a number its source does not
fix, the choice is stated here.

- ``olmo-core``: OLMo-core StabilityMonitorCallback: value > mean + 6 std of the previous 128
  values, only once the window is full, std < 1e-10 ignored (allenai/OLMo-core
  ``train/callbacks/stability_monitor.py``). Applied to the loss and to the grad norm.
- ``olmo2``: OLMo 2 spike score (arXiv 2501.00656): at least 7 std away from the mean of the
  previous 1000 values (only once 1000 exist).
- ``megatron``: Megatron ``check_for_spiky_loss`` / ``--check-for-large-grads``: value > 10 x the
  max of the first 100 values.
- ``llm-foundry``: KillLossSpike: window = max(100, 5 % of the run); loss >= 2 x the mean of the
  previous window (once full) for more than ``patience`` 4 consecutive steps (the 5th trips it).
  ``llm-foundry-high``: its HighLossError: after 2 windows, at least half of the last window above
  cap = min(max of the first window, 10) (applied to divergence).
- ``lightning``: Lightning Fabric SpikeDetection: running mean of the previous ``window`` 10 values,
  from the second value (warmup 1); spike = did not improve on the last value AND
  |loss - mean| >= rtol 2.0 x |mean|; non-finite = spike.
- ``metaseq``: loss / EWM(previous losses, span 9, alpha 0.2) > ``ewm_ratio_to_skip_batch``. The
  flag defaults to -1 (off) and no released config value was found: 1.5 is used (between the
  smallest labelled spike 1.2x and llm-foundry's 2x).
- ``zclip``: ZClip (arXiv 2504.02507, bluorion-com/ZClip): warm-up 25 norms, then EMA mean/var with
  alpha 0.97 updated with the clipped value; z = (g - mu)/(sigma + 1e-6) > 2.5 is a spike.
- ``deepspeed-min-scale``: DeepSpeed/Megatron abort when the fp16 loss scale reaches
  ``min_loss_scale`` = 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from stabdiag.table import GRAD_NORM, LOSS_SCALE, TRAIN_LOSS


def _prev_mean_std(x: np.ndarray, window: int, min_periods: int) -> tuple[np.ndarray, np.ndarray]:
    s = pd.Series(x).shift(1)
    r = s.rolling(window, min_periods=min_periods)
    return r.mean().to_numpy(), r.std().to_numpy()


def olmo_core(x: np.ndarray, window: int = 128, sigmas: float = 6.0) -> np.ndarray:
    mean, std = _prev_mean_std(x, window, window)
    with np.errstate(invalid="ignore"):
        return (x > mean + sigmas * std) & (std >= 1e-10)


def olmo2(x: np.ndarray, window: int = 1000, sigmas: float = 7.0) -> np.ndarray:
    mean, std = _prev_mean_std(x, window, window)
    with np.errstate(invalid="ignore"):
        return np.abs(x - mean) >= sigmas * std


def megatron(x: np.ndarray, first: int = 100, factor: float = 10.0) -> np.ndarray:
    out = np.zeros(len(x), dtype=bool)
    if len(x) <= first:
        return out
    ref = np.nanmax(x[:first])
    with np.errstate(invalid="ignore"):
        out[first:] = x[first:] > factor * ref
    return out


def _window(n: int) -> int:
    return max(100, round(0.05 * n))


def llm_foundry(x: np.ndarray, multiplier: float = 2.0, patience: int = 4) -> np.ndarray:
    w = _window(len(x))
    mean, _ = _prev_mean_std(x, w, w)
    with np.errstate(invalid="ignore"):
        out = x >= multiplier * mean
    # consecutive-outlier count; the (patience + 1)-th consecutive outlier trips it
    grp = np.cumsum(~out)
    run = pd.Series(out.astype(np.int64)).groupby(grp).cumsum().to_numpy()
    return run > patience


def llm_foundry_high(x: np.ndarray) -> np.ndarray:
    n = len(x)
    w = _window(n)
    out = np.zeros(n, dtype=bool)
    if n <= 2 * w:
        return out
    cap = min(float(np.nanmax(x[:w])), 10.0)
    above = pd.Series((x > cap).astype(np.float64)).rolling(w, min_periods=w).mean().to_numpy()
    out[2 * w :] = above[2 * w :] >= 0.5
    return out


def lightning(x: np.ndarray, window: int = 10, rtol: float = 2.0) -> np.ndarray:
    mean = pd.Series(x).shift(1).rolling(window, min_periods=1).mean().to_numpy()
    last = np.concatenate([[np.nan], x[:-1]])
    with np.errstate(invalid="ignore"):
        not_better = ~(x - last < 0)
        spike = not_better & (np.abs(x - mean) >= rtol * np.abs(mean))
    spike |= ~np.isfinite(x)
    spike[0] = False
    return spike


def metaseq(x: np.ndarray, span: int = 9, ratio: float = 1.5) -> np.ndarray:
    ewm = pd.Series(x).ewm(span=span, adjust=False, ignore_na=True).mean().shift(1).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        return x / ewm > ratio


def zclip(
    x: np.ndarray, alpha: float = 0.97, z_thresh: float = 2.5, warmup: int = 25, eps: float = 1e-6
) -> np.ndarray:
    """ZClip's state machine (sequential by definition: the EMA is updated with the clipped value)."""
    out = np.zeros(len(x), dtype=bool)
    fin = np.flatnonzero(np.isfinite(x))
    if len(fin) <= warmup:
        return out
    head = x[fin[:warmup]]
    mu, var = float(np.mean(head)), float(np.var(head))
    for i in fin[warmup:]:
        g = float(x[i])
        sd = math.sqrt(var)
        z = (g - mu) / (sd + eps)
        if z > z_thresh:
            out[i] = True
            g = mu + z_thresh * sd / (z / z_thresh)  # "adaptive_scaling" clip
        mu = alpha * mu + (1 - alpha) * g
        var = alpha * var + (1 - alpha) * (g - mu) ** 2
    return out


def deepspeed_min_scale(x: np.ndarray, min_scale: float = 1.0) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return (x <= min_scale) & (x > 0)


@dataclass(frozen=True)
class Baseline:
    name: str
    metric: str
    classes: tuple[str, ...]
    flag: Callable[[np.ndarray], np.ndarray]
    kind: str  # the stabdiag detector kind it competes with (cases may restrict kinds)
    source: str


LOSS_CLASSES = ("loss_spike",)
BASELINES: tuple[Baseline, ...] = (
    Baseline(
        "olmo-core 6σ/128 (loss)",
        TRAIN_LOSS,
        LOSS_CLASSES,
        olmo_core,
        "loss-spike",
        "allenai/OLMo-core StabilityMonitorCallback",
    ),
    Baseline(
        "olmo2 7σ/1000 (loss)",
        TRAIN_LOSS,
        LOSS_CLASSES,
        olmo2,
        "loss-spike",
        "OLMo 2, arXiv 2501.00656",
    ),
    Baseline(
        "megatron 10x max100 (loss)",
        TRAIN_LOSS,
        LOSS_CLASSES,
        megatron,
        "loss-spike",
        "NVIDIA/Megatron-LM check_for_spiky_loss",
    ),
    Baseline(
        "llm-foundry KillLossSpike",
        TRAIN_LOSS,
        LOSS_CLASSES,
        llm_foundry,
        "loss-spike",
        "mosaicml/llm-foundry kill_loss_spike_callback.py",
    ),
    Baseline(
        "lightning SpikeDetection",
        TRAIN_LOSS,
        LOSS_CLASSES,
        lightning,
        "loss-spike",
        "Lightning-AI fabric/utilities/spike.py",
    ),
    Baseline(
        "metaseq EWM span 9 (1.5x)",
        TRAIN_LOSS,
        LOSS_CLASSES,
        metaseq,
        "loss-spike",
        "facebookresearch/metaseq PR #521/#542",
    ),
    Baseline(
        "olmo-core 6σ/128 (grad)",
        GRAD_NORM,
        ("grad_spike", "grad_explosion"),
        olmo_core,
        "grad-spike",
        "allenai/OLMo-core StabilityMonitorCallback",
    ),
    Baseline(
        "olmo2 7σ/1000 (grad)",
        GRAD_NORM,
        ("grad_spike",),
        olmo2,
        "grad-spike",
        "OLMo 2, arXiv 2501.00656",
    ),
    Baseline(
        "megatron 10x max100 (grad)",
        GRAD_NORM,
        ("grad_spike", "grad_explosion"),
        megatron,
        "grad-spike",
        "NVIDIA/Megatron-LM --check-for-large-grads",
    ),
    Baseline(
        "zclip z2.5 α0.97",
        GRAD_NORM,
        ("grad_spike", "grad_explosion"),
        zclip,
        "grad-spike",
        "bluorion-com/ZClip zclip.py",
    ),
    Baseline(
        "llm-foundry HighLoss",
        TRAIN_LOSS,
        ("divergence",),
        llm_foundry_high,
        "divergence",
        "mosaicml/llm-foundry kill_loss_spike_callback.py",
    ),
    Baseline(
        "deepspeed min_loss_scale=1",
        LOSS_SCALE,
        ("fp16",),
        deepspeed_min_scale,
        "fp16-overflow",
        "deepspeedai/DeepSpeed runtime/fp16/loss_scaler.py",
    ),
)
