"""loss-spike (SD101): the loss jumps far above its recent robust baseline.

What it detects
    A log point where the training loss rises far above the median of the points just before it,
    grouped with the following points into one event until the loss is back in its baseline band.
    Each event says how high it went, whether and how fast the loss recovered, the LR at onset and
    whether the gradient norm spiked at the same time.

Why it matters
    A spike that recovers within a few log points is mostly harmless but worth counting (OLMo 2
    tracks a "spike score"); one that does not recover has derailed the run and needs a rewind
    (PaLM: restart ~100 steps before the spike and skip 200-500 batches).

How it is computed
    Work in log points and on log(loss) when the loss is positive. Baseline = median of the previous
    ``level_window`` (5) finite points, corrected by the median of the previous ``window`` (64)
    residuals (its lag on a falling curve); sigma = 1.4826 x MAD of those residuals (floored at
    1 %). A short level plus a residual MAD keeps the baseline on a steep early descent or a log
    written every 100 steps, where a 64-point median lags so far that its spread measures the trend
    and a 3x spike scores z 3. A point is a spike onset when all hold: z >= ``z_threshold`` (7, the
    OLMo 2 spike-score threshold; healthy heavy-tailed noise reaches 6 sigma every few 10k points),
    loss >= ``min_ratio`` (1.2) x baseline, and the rise >= ``min_abs_rise`` (2 %) of the run's
    initial loss level, so tiny noise on a smooth or a near-zero curve never fires. At least
    ``min_history`` (5) finite points must precede; before that, a point >= ``early_ratio`` (2) x the
    lowest loss so far is a spike (a healthy loss only falls in its first points; Megatron's check
    would need 100) when the jump is also >= ``early_sigmas`` (3) x the run's point-to-point noise
    (noisy losses stay quiet). The event lasts until the loss is back within baseline + max(3 sigma,
    10 %).
    Recovered within ``quick_recovery_points`` (50) log points: transient, ``warning`` (``info`` when
    the peak is < ``warn_ratio`` (2, llm-foundry's factor) x baseline, fewer than
    ``lasting_points`` (3) points stayed >= ``min_ratio`` x baseline and the grad norm did not spike with it: heavy-tailed per-step
    noise makes such blips; more than ``max_blips`` (5) of them are told as one finding); recovered later: ``warning`` (slow);
    never recovered: ``error`` (the run diverged). A grad-norm spike within
    one log interval of the event is recorded as ``grad_spike_coincides`` (stronger evidence that the
    spike is an optimisation event, not a bad batch in the logging). NaN/Inf losses are left out of
    the baseline and the search goes on after them.
    Short logs (fewer than ``short_log`` (64) points, e.g. pasted fragments with restarts): the log
    is also split into fragments at ``meta/restart`` rows and at step gaps > ``fragment_gap`` (20) x
    the usual log interval; a point is a spike onset when it is >= ``fragment_ratio`` (1.5) x the
    lowest earlier value of its fragment (>= ``fragment_min_prev`` (2) earlier finite values), and
    that jump (on log scale) is >= ``fragment_sigmas`` (3) x the fragment's point-to-point noise
    before it (median successive difference, floored at 1 %) and >= ``fragment_log_sigmas`` (2.5)
    x the whole log's noise (lower quartile of within-fragment successive differences, robust while
    fewer than 3/4 are spike jumps). Recovery is judged inside the fragment only: when the fragment
    ends first, the finding says so and is never ``error``.

Known false positives
    Losses that legitimately jump: a curriculum or data-mixture switch, a sequence-length change,
    an epoch boundary with unshuffled data. Interval-averaged logs (HF ``loss``) dilute one-step
    spikes by the interval length, so small spikes may be missed there rather than over-reported.
    The short-log rule compares with a minimum, which noise pulls down: on short logs with >= 10 %
    point-to-point noise it fires on a clean curve in roughly 1 of 7 logs (measured on 10-60-point
    decaying curves; never at 1-3 %); such 1.5-2x blips that recover are ``info``.

References
    OLMo-core StabilityMonitorCallback / SkipStepOptimizer (6 sigma over 128 previous values);
    OLMo 2 spike score (7 sigma, 1000 values; arXiv 2501.00656); Megatron ``check_for_spiky_loss``
    (10x the max of the first 100 values); llm-foundry KillLossSpike (2x the window mean, patience
    4); Lightning SpikeDetection (rtol 2.0, window 10); metaseq loss/EWM span 9; PaLM
    (arXiv 2204.02311) rewind-and-skip.
"""

from __future__ import annotations

import math
from bisect import insort
from dataclasses import dataclass

import numpy as np

from stabdiag import words
from stabdiag.detectors import _stats as st
from stabdiag.detectors._common import finding, loss_metric, usable
from stabdiag.detectors.base import Detector
from stabdiag.findings import Finding, Severity, Skipped
from stabdiag.table import GRAD_NORM, LR, RESTART, TRAIN_LOSS, VAL_LOSS, RunData

CODE, KIND = "SD101", "loss-spike"


@dataclass(frozen=True, kw_only=True)
class Config:
    """Thresholds of the loss-spike check (``[tool.stabdiag.detectors.loss-spike]``)."""

    level_window: int = 5
    """Log points before a point whose median is its local level. Short, so that the level follows
    a steep early descent or a log written every 100 steps instead of lagging behind it."""
    window: int = 64
    """Previous residuals (loss minus local level) whose MAD is the noise sigma. OLMo-core's
    StabilityMonitorCallback uses 128 values; 64 log points judge shorter logs sooner."""
    min_history: int = 5
    """Finite log points needed before a point is judged against its baseline; earlier points are
    judged by the early rule (``early_ratio``)."""
    z_threshold: float = 7.0
    """Robust z-score on log(loss) a point must reach to be a spike: OLMo 2's spike-score threshold
    (7 std, arXiv 2501.00656). Healthy heavy-tailed noise reaches 6 sigma every few 10k points."""
    sigma_floor: float = 0.01
    """Floor of the noise sigma, relative to the level (1 %): on a very smooth curve a tiny wiggle
    would otherwise be many sigma."""
    min_ratio: float = 1.2
    """A spike is also at least this multiple of its baseline (20 % above it), whatever its z."""
    min_abs_rise: float = 0.02
    """... and rises by at least this share (2 %) of the run's initial loss level, so noise on a
    near-zero loss never fires."""
    early_ratio: float = 2.0
    """Before ``min_history`` points, a point at least this multiple of the lowest loss so far is a
    spike: a healthy loss only falls in its first points (Megatron's spiky-loss check waits for
    100 values)."""
    early_sigmas: float = 3.0
    """... when that jump is also at least this many times the run's own point-to-point noise, so a
    noisy loss stays quiet."""
    merge_gap: int = 1
    """Flagged points at most this many log points after an event's recovery belong to that event."""
    recovery_sigmas: float = 3.0
    """The loss has recovered when it is back within the baseline plus the larger of this many
    sigma and ``recovery_rel``."""
    recovery_rel: float = 0.10
    """Relative part of the recovery band: back within 10 % of the baseline counts as recovered."""
    quick_recovery_points: int = 50
    """Recovered within this many log points: a transient spike (warning, or info when small);
    recovered later: a slow recovery (warning); never: the run diverged (error)."""
    warn_ratio: float = 2.0
    """A quick recovery whose peak is below this multiple of the baseline is only info, unless it
    lasted (``lasting_points``) or the grad norm spiked with it. llm-foundry's KillLossSpike uses
    the same factor (2x the window mean)."""
    lasting_points: int = 3
    """A quick, small spike with this many log points at or above ``min_ratio`` x baseline is a
    warning, not info: it was more than a one-point blip."""
    judge_tail_points: int = 10
    """With fewer log points than this after a spike that has not recovered, the finding says the
    log ends before recovery could be judged, never that the loss did not recover."""
    max_blips: int = 5
    """More info-level blips than this in one run are told as one finding instead of one each."""
    recovery_search: int = 5000
    """Log points searched for the recovery of each event; a loss not back by then did not recover."""
    min_tail_points: int = 3
    """Fewest log points after onset to call a spike unrecovered (with ``judge_tail_points``)."""
    max_events: int = 200
    """Events reported per run at most, so a pathological log cannot flood the report."""
    short_log: int = 64
    """Logs with fewer points than this (pasted fragments, resumed runs) are also judged fragment
    by fragment, with the rules below."""
    fragment_gap: float = 20.0
    """A step gap larger than this many usual log intervals starts a new fragment (and a recovery
    seen only after such a gap is reported as a gap, not as a quick recovery)."""
    fragment_ratio: float = 1.5
    """In a short log, a point at least this multiple of the lowest earlier value of its fragment is
    a spike onset (with the two noise conditions below)."""
    fragment_min_prev: int = 2
    """... given at least this many earlier finite values in the fragment."""
    fragment_sigmas: float = 3.0
    """... and a jump (log scale) of at least this many times the fragment's point-to-point noise
    before it (median successive difference, floored at 1 %)."""
    fragment_log_sigmas: float = 2.5
    """... and at least this many times the whole log's noise (the lower quartile of within-fragment
    successive differences, robust while fewer than 3/4 of them are spike jumps)."""


DEFAULT = Config()


@dataclass(frozen=True)
class SpikeEvent:
    """One spike found on the loss curve, as indices into the values searched: where it began,
    peaked and ended, where the loss was back in its band (-1: never), its baseline and z."""

    onset: int  # index of the first spike point
    peak: int  # index of the highest point
    end: int  # index of the last point above the band
    recovery: int  # index of the first point back in the band, -1 if never
    baseline: float  # linear-scale baseline at onset
    z: float
    fragment_end: int = -1  # short-log rule: last index of the event's fragment (-1: whole log)


def find_events(values: np.ndarray, cfg: Config = DEFAULT) -> list[SpikeEvent]:
    """Spike events of a loss series, in log points (vectorised flagging, one loop per event).

    Cached per values array and config: lr-schedule and restart ask for the same events.
    """
    return list(
        st.cached(values, ("loss-spike-events", cfg), lambda: tuple(_find_events(values, cfg)))
    )


def _find_events(values: np.ndarray, cfg: Config) -> list[SpikeEvent]:
    lin = st.clean(values)
    n = len(lin)
    if np.isfinite(lin).sum() <= cfg.min_history:
        return []
    x, logged, med, sigma = st.local_baseline(
        values,
        cfg.level_window,
        cfg.window,
        cfg.min_history,
        cfg.sigma_floor,
        floor_if_linear=False,
    )
    if not logged:  # linear scale: floor sigma relative to the level instead
        sigma = np.maximum(sigma, cfg.sigma_floor * np.abs(med))
    init_level = abs(st.nanmedian(lin[: max(5, n // 20)]))
    base_lin = np.exp(med) if logged else med
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (x - med) / sigma
        rise = lin - base_lin
        ratio_ok = (
            lin >= cfg.min_ratio * base_lin
            if logged
            else rise >= (cfg.min_ratio - 1) * np.abs(base_lin)
        )
    flag = (z >= cfg.z_threshold) & ratio_ok & (rise >= cfg.min_abs_rise * init_level)
    flag &= np.isfinite(z)
    if logged:  # before a baseline exists: a jump to >= early_ratio x the lowest loss so far
        lin = np.where(np.isfinite(x), lin, np.nan)  # values to_log left out (zeros) stay out
        low = _lowest_before(lin)
        fin = x[np.isfinite(x)]
        run_sigma = st.DIFF_TO_SIGMA * st.nanmedian(np.abs(fin[1:] - fin[:-1]))  # run noise
        with np.errstate(invalid="ignore", divide="ignore"):
            early = (
                np.isnan(med)
                & (lin >= cfg.early_ratio * low)
                & (lin - low >= cfg.min_abs_rise * init_level)
                & (x - np.log(low) >= cfg.early_sigmas * run_sigma)
            )
        med = np.where(early, np.log(low), med)
        sigma = np.where(early, 0.0, sigma)
        base_lin = np.where(early, low, base_lin)
        flag |= early
    events: list[SpikeEvent] = []
    cand = np.flatnonzero(flag)
    pos = 0
    while pos < len(cand) and len(events) < cfg.max_events:
        i = int(cand[pos])
        b, s = med[i], sigma[i]
        band = b + max(
            cfg.recovery_sigmas * s,
            math.log1p(cfg.recovery_rel) if logged else cfg.recovery_rel * abs(b),
        )
        with np.errstate(invalid="ignore"):
            back = x <= band
        rec = st.first_index(back, i + 1, cfg.recovery_search)
        end = (rec - 1) if rec >= 0 else n - 1
        seg = lin[i : end + 1]
        peak = i + int(np.nanargmax(seg)) if np.isfinite(seg).any() else i
        events.append(SpikeEvent(i, peak, end, rec, float(base_lin[i]), float(z[i])))
        nxt = rec + cfg.merge_gap if rec >= 0 else n
        pos = int(np.searchsorted(cand, max(nxt, i + 1)))
    return events


def _lowest_before(lin: np.ndarray) -> np.ndarray:
    """Lowest finite value before each point, NaN where the point itself is NaN or none precedes:
    pandas' ``Series(lin).cummin().shift(1)`` (NaN skipped, NaN positions kept), in two numpy
    calls instead of a Series (a tenth of loss-spike's cost on a 20-point run)."""
    low = np.fmin.accumulate(lin)
    low[np.isnan(lin)] = np.nan
    out = np.empty_like(low)
    out[:1] = np.nan
    out[1:] = low[:-1]
    return out


def fragment_ids(steps: np.ndarray, restarts: np.ndarray | None, gap: float) -> np.ndarray:
    """Fragment number of each point: a new one at each restart row and after each step gap
    > ``gap`` x the usual log interval (a pasted log made of separate pieces)."""
    n = len(steps)
    brk = np.zeros(n, dtype=bool)
    if n:
        brk[0] = True
        brk[1:] = (steps[1:] - steps[:-1]) > gap * st.log_interval(steps)
        if restarts is not None and len(restarts):
            brk |= np.isin(steps, restarts)
    return np.cumsum(brk) - 1


def _fragment_onsets(
    xs: np.ndarray, log_sigma: float, cfg: Config
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every point k of one fragment, from the finite points before it: their minimum, the
    noise sigma (floored median |successive difference|) and whether k is a spike onset.

    The same numbers the point-by-point rule computed from ``xs[:k]`` at each k, for all k at once
    (expanding min and expanding median), so a short log costs a few array operations, not a
    dozen per point (issue 13 R4: 100,000 short runs)."""
    m = len(xs)
    fin = np.isfinite(xs)
    before = np.concatenate([[0], np.cumsum(fin)[:-1]]).astype(np.int64)  # finite points before k
    vals = np.where(fin, xs, np.nan)
    low = np.concatenate([[np.nan], np.fmin.accumulate(vals)[:-1]]) if m else vals
    xf = xs[fin]
    d = np.abs(xf[1:] - xf[:-1])
    dmed = st.trailing_median(d, max(1, len(d)), 1)  # dmed[j] = median(d[: j + 1])
    med = np.full(m, np.nan)
    has = before >= 2  # j = before - 2: the median of the first before - 1 differences
    med[has] = dmed[before[has] - 2]
    sig = np.fmax(cfg.sigma_floor, st.DIFF_TO_SIGMA * med)
    with np.errstate(invalid="ignore"):
        jump = xs - low
        onset = (
            (before >= cfg.fragment_min_prev)
            & fin
            & (jump >= math.log(cfg.fragment_ratio))
            & (jump >= cfg.fragment_sigmas * sig)
            & (jump >= cfg.fragment_log_sigmas * log_sigma)
        )
    return low, sig, onset


def _fragment_events(
    steps: np.ndarray, values: np.ndarray, restarts: np.ndarray | None, cfg: Config
) -> list[SpikeEvent]:
    """Short-log rule (fewer than ``short_log`` points): each fragment judged on its own points."""
    x, logged = st.to_log(values)
    if not logged:
        return []
    if len(x) <= st.TINY:
        return _fragment_events_list(steps, x, restarts, cfg)
    fid = fragment_ids(steps, restarts, cfg.fragment_gap)
    dx = np.abs(x[1:] - x[:-1])
    dx = dx[(fid[1:] == fid[:-1]) & np.isfinite(dx)]
    if dx.size < 4:
        return []
    # lower quartile of |successive difference| -> sigma: robust while < 3/4 of them are spike jumps
    log_sigma = st.percentile(dx, 25) / (0.31864 * 2**0.5)
    events: list[SpikeEvent] = []
    n = len(x)
    for f in range(int(fid[-1]) + 1 if n else 0):
        idx = np.flatnonzero(fid == f)
        low_k, sig_k, onset = _fragment_onsets(x[idx], log_sigma, cfg)
        k = 0
        while k < len(idx):
            k = st.first_index(onset, k)
            if k < 0:
                break
            i = int(idx[k])
            low, sig = float(low_k[k]), float(sig_k[k])
            jump = float(x[i]) - low
            band = low + max(cfg.recovery_sigmas * sig, math.log1p(cfg.recovery_rel))
            rest = idx[k + 1 :]
            with np.errstate(invalid="ignore"):
                back = rest[x[rest] <= band]
            rec = int(back[0]) if back.size else -1
            end = rec - 1 if rec >= 0 else int(idx[-1])
            seg = x[i : end + 1]
            peak = i + int(np.nanargmax(seg)) if np.isfinite(seg).any() else i
            events.append(
                SpikeEvent(i, peak, end, rec, float(math.exp(low)), jump / sig, int(idx[-1]))
            )
            if rec < 0:
                break
            k = int(np.searchsorted(idx, rec)) + 1
    return events


def _fragments(steps: np.ndarray, restarts: np.ndarray | None, gap: float) -> list[range]:
    """``fragment_ids`` as index ranges (a fragment is a contiguous piece of the log)."""
    n = len(steps)
    if not n:
        return []
    thr = gap * st.log_interval(steps)
    # numpy's integer differences, compared in float64 as fragment_ids' array comparison does
    brk = [True] + [float(d) > thr for d in (steps[1:] - steps[:-1]).tolist()]
    if restarts is not None and len(restarts):
        brk = [a or b for a, b in zip(brk, np.isin(steps, restarts).tolist(), strict=True)]
    first = [i for i, b in enumerate(brk) if b]
    return [range(a, b) for a, b in zip(first, [*first[1:], n], strict=True)]


def _fragment_events_list(
    steps: np.ndarray, x: np.ndarray, restarts: np.ndarray | None, cfg: Config
) -> list[SpikeEvent]:
    """``_fragment_events`` of a log of at most ``st.TINY`` points (``x``: its log), in plain floats.

    The same rule walked point by point with a running minimum and a sorted list of successive
    differences: the same numbers as the array version (which is tested against the pointwise
    reference), without its two dozen numpy calls per fragment (issue 13 R4: 100,000 short runs).
    """
    xs = x.tolist()
    frags = _fragments(steps, restarts, cfg.fragment_gap)
    dx = [
        d
        for r in frags
        for d in (abs(xs[i] - xs[i - 1]) for i in r[1:])
        if d - d == 0.0  # finite
    ]
    if len(dx) < 4:
        return []
    # lower quartile of |successive difference| -> sigma: robust while < 3/4 of them are spike jumps
    log_sigma = st.percentile_sorted(sorted(dx), 25) / (0.31864 * 2**0.5)
    min_jump = math.log(cfg.fragment_ratio)
    rel_band = math.log1p(cfg.recovery_rel)
    events: list[SpikeEvent] = []
    for r in frags:
        # per point, from the finite points of the fragment before it: lowest value, noise sigma
        lows, sigs, onsets = [], [], []
        low, count, last, diffs = math.nan, 0, math.nan, []
        for i in r:
            v = xs[i]
            if count >= 2 and diffs:
                sig = st.DIFF_TO_SIGMA * st.median_sorted(diffs)
                sig = sig if sig > cfg.sigma_floor else cfg.sigma_floor
            else:  # np.fmax(floor, NaN): the floor
                sig = cfg.sigma_floor
            jump = v - low
            finite = v - v == 0.0
            lows.append(low)
            sigs.append(sig)
            onsets.append(
                count >= cfg.fragment_min_prev
                and finite
                and jump >= min_jump
                and jump >= cfg.fragment_sigmas * sig
                and jump >= cfg.fragment_log_sigmas * log_sigma
            )
            if finite:
                if count:
                    d = abs(v - last)
                    if d - d == 0.0:
                        insort(diffs, d)
                low = v if not count or v < low else low
                last = v
                count += 1
        k = 0
        while True:
            k = next((j for j in range(k, len(r)) if onsets[j]), -1)
            if k < 0:
                break
            i, low, sig = r[k], lows[k], sigs[k]
            jump = xs[i] - low
            band = low + max(cfg.recovery_sigmas * sig, rel_band)
            rec = next((j for j in range(i + 1, r.stop) if xs[j] <= band), -1)
            end = rec - 1 if rec >= 0 else r.stop - 1
            events.append(
                SpikeEvent(
                    i, _peak(xs, i, end), end, rec, float(math.exp(low)), jump / sig, r.stop - 1
                )
            )
            if rec < 0:
                break
            k = rec - r.start + 1
    return events


def _peak(xs: list[float], i: int, end: int) -> int:
    """``i + np.nanargmax(xs[i : end + 1])`` when a value there is finite, else ``i``: NaN read
    as -inf, the first of equal maxima."""
    seg = xs[i : end + 1]
    if not any(v - v == 0.0 for v in seg):
        return i
    best, at = -math.inf, 0
    for j, v in enumerate(seg):
        w = -math.inf if v != v else v
        if j == 0 or w > best:
            best, at = w, j
    return i + at


def run_events(run: RunData, cfg: Config = DEFAULT) -> list[SpikeEvent]:
    """Spike events of a run's training loss: ``find_events`` plus, on short logs, the fragment rule
    (events whose onset falls inside an earlier-found event are left out). Shared with trouble()."""
    s = run.get(loss_metric(run))
    if s is None:
        return []
    events = find_events(s.values, cfg)
    if len(s.values) >= cfg.short_log:
        return events
    r = run.get(RESTART)
    extra = _fragment_events(s.steps, s.values, None if r is None else r.steps, cfg)
    for ev in extra:
        if not any(e.onset <= ev.onset <= max(e.end, e.onset) for e in events):
            events.append(ev)
    return sorted(events, key=lambda e: e.onset)


def _grad_coincidence(run: RunData, lo: int, hi: int) -> tuple[bool, float | None]:
    """Whether the grad norm spiked within [lo, hi] steps, and its max there."""
    g = usable(run, GRAD_NORM, 2)
    if g is None:
        return False, None
    a, b = np.searchsorted(g.steps, lo, side="left"), np.searchsorted(g.steps, hi, side="right")
    vals = st.clean(g.values[a:b])
    if not np.isfinite(vals).any():
        return False, None
    peak = float(np.nanmax(vals))
    x, _, med_z, sig_z = st.median_baseline(g.values, 64, 10, 0.05)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (x[a:b] - med_z[a:b]) / sig_z[a:b]
    med = st.nanmedian(g.values[max(0, a - 64) : a])
    with np.errstate(invalid="ignore"):
        spiky = bool(np.any(z >= 4.0)) and (not math.isfinite(med) or peak >= 1.5 * med)
    if not np.isfinite(z).any() and np.isfinite(g.values[max(0, a - 64) : a]).sum() >= 2:
        spiky = math.isfinite(med) and peak >= 2.0 * med  # too short for a z: a plain 2x jump
    return spiky, peak


def check(run: RunData, cfg: Config = DEFAULT) -> list[Finding] | Skipped:
    metric = loss_metric(run)
    s = usable(run, metric)
    if s is None:
        return DETECTOR.skipped(run, f"no {TRAIN_LOSS} or {VAL_LOSS} series")
    if np.isfinite(s.values).sum() <= cfg.min_history:
        return DETECTOR.skipped(
            run, f"{metric} has too few finite points ({cfg.min_history + 1} needed)"
        )
    what = "loss" if metric == TRAIN_LOSS else "validation loss"
    steps, vals = s.steps, s.values
    interval = st.log_interval(steps)
    lr = usable(run, LR)
    out: list[Finding] = []
    for ev in run_events(run, cfg):
        on, pk = int(steps[ev.onset]), int(steps[ev.peak])
        peak_v = float(vals[ev.peak])
        ratio = peak_v / ev.baseline if ev.baseline > 0 else None
        grad_hit, grad_peak = _grad_coincidence(run, on - interval, int(steps[ev.end]) + interval)
        last = ev.fragment_end if ev.fragment_end >= 0 else len(vals) - 1
        tail = last - ev.onset
        rec_steps = int(steps[ev.recovery] - steps[ev.onset]) if ev.recovery >= 0 else None
        prev = np.flatnonzero(np.isfinite(vals[: ev.onset]))
        last_ok = (
            f"; the last value before it was {st.fmt(float(vals[prev[-1]]))} at step "
            f"{int(steps[prev[-1]])}"
            if prev.size
            else ""
        )
        base_txt = (
            f"a baseline of {st.fmt(ev.baseline)} (median of the previous {cfg.level_window} log "
            f"points, computed{last_ok})"
        )
        jump = (
            f"{what} jumped {ratio:.1f}x to {st.fmt(peak_v)} at step {pk} from {base_txt}"
            if ratio
            else f"{what} rose to {st.fmt(peak_v)} at step {pk} from {base_txt}"
        )
        if ev.recovery >= 0:
            quick = ev.recovery - ev.onset <= cfg.quick_recovery_points
            seg = vals[ev.onset : ev.recovery]
            high = int(np.sum(np.isfinite(seg) & (seg >= cfg.min_ratio * ev.baseline)))
            small = (
                ratio is not None
                and ratio < cfg.warn_ratio
                and not grad_hit
                and high < cfg.lasting_points
            )
            sev = Severity.INFO if quick and small else Severity.WARNING
            how = (
                f"recovered in {words.count(rec_steps, 'step')}"
                if quick
                else f"recovered only after {words.count(rec_steps, 'step')}"
            )
            gap_from = int(steps[ev.recovery - 1]) if ev.recovery > 0 else None
            if gap_from is not None and steps[ev.recovery] - gap_from > cfg.fragment_gap * interval:
                how = (
                    f"the log has a gap after step {gap_from}; the next value, "
                    f"{st.fmt(float(vals[ev.recovery]))} at step {int(steps[ev.recovery])}, is back at the baseline"
                )
        elif tail < max(cfg.min_tail_points, cfg.judge_tail_points) or ev.fragment_end >= 0:
            small = ratio is not None and ratio < cfg.warn_ratio and not grad_hit
            sev = Severity.INFO if small else Severity.WARNING
            now = f" (last value {st.fmt(float(vals[last]))} at step {int(steps[last])})"
            how = (
                f"the log ends {words.count(int(steps[last] - steps[ev.onset]), 'step')} later, before recovery "
                f"could be judged{now}"
                if ev.fragment_end < 0
                else f"its fragment of the log ends (step {int(steps[last])}) before recovery could be judged{now}"
            )
        else:
            sev = Severity.ERROR
            how = (
                f"did not recover (median of the last {max(1, tail // 5)} log points "
                f"{st.fmt(float(np.nanmedian(vals[-max(1, tail // 5) :])))}, computed; last value "
                f"{st.fmt(float(vals[last]))} at step {int(steps[last])}): the run diverged from here"
            )
        grad_note = ", with a coinciding grad-norm spike" if grad_hit else ""
        onset_txt = "" if on == pk else f", rising from step {on}"
        msg = f"{jump}{onset_txt}{grad_note}; {how}."
        out.append(
            finding(
                CODE,
                KIND,
                run,
                severity=sev,
                metric=metric,
                step_start=on,
                step_end=int(steps[ev.end]),
                message=msg,
                evidence={
                    "baseline": ev.baseline,
                    "peak": peak_v,
                    "peak_step": pk,
                    "ratio": ratio,
                    "z": ev.z,
                    "recovered": ev.recovery >= 0,
                    "recovery_steps": rec_steps,
                    "lr_at_onset": st.value_at(lr.steps, lr.values, on) if lr else None,
                    "grad_norm_at_peak": grad_peak,
                    "grad_spike_coincides": grad_hit,
                    "log_interval": interval,
                    "short_log_fragment": ev.fragment_end >= 0,
                },
            )
        )
    return _fold_blips(run, out, metric, cfg)


def _fold_blips(run: RunData, found: list[Finding], metric: str, cfg: Config) -> list[Finding]:
    """Many info-level blips (per-batch loss noise of an unaveraged log) become one finding that
    counts them and quotes the largest, instead of a page of identical lines."""
    blips = [f for f in found if f.severity == Severity.INFO]
    if len(blips) <= cfg.max_blips:
        return found
    top = max(blips, key=lambda f: f.evidence.get("ratio") or 0.0)
    lo = min(f.evidence.get("ratio") or 0.0 for f in blips)
    back = max(f.evidence.get("recovery_steps") or 0 for f in blips)
    grad = ", no grad-norm spike with them" if run.get(GRAD_NORM) is not None else ""
    msg = (
        f"{len(blips)} short loss blips ({lo:.1f}-{top.evidence['ratio']:.1f}x, each back within "
        f"{words.count(back, 'step')}{grad}): "
        f"the per-batch noise of an unaveraged loss; the largest was {st.fmt(top.evidence['baseline'])} "
        f"-> {st.fmt(top.evidence['peak'])} at step {top.step_start}."
    )
    folded = finding(
        CODE,
        KIND,
        run,
        severity=Severity.INFO,
        metric=metric,
        step_start=blips[0].step_start,
        step_end=blips[-1].step_end,
        message=msg,
        evidence={
            "blips": len(blips),
            "blip_steps": [f.step_start for f in blips][:50],
            "max_ratio": top.evidence.get("ratio"),
            "max_step": top.step_start,
            "baseline": top.evidence.get("baseline"),
            "peak": top.evidence.get("peak"),
            "recovered": True,
        },
    )
    rest = [f for f in found if f.severity > Severity.INFO]
    return sorted([*rest, folded], key=lambda f: f.step_start or 0)


DETECTOR = Detector(
    code=CODE,
    kind=KIND,
    summary="loss jumps far above its recent robust baseline",
    doc=__doc__ or "",
    check=check,
    config=Config,
)
