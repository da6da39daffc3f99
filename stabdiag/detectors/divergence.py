"""divergence (SD102): the loss rises and does not come back, or ends above where it started.

What it detects
    A run whose robust end level of the training loss is well above the best level it reached, or
    above its start. Separately, a validation loss that rises while the training loss keeps falling
    is reported as ``info`` overfitting (not divergence).

Why it matters
    A diverged run wastes every step after the onset; the fix (rewind to before the onset, lower the
    LR, longer warm-up) depends on knowing where it began. Overfitting needs early stopping, not a
    stability fix, so the two must not be confused.

How it is computed
    Levels are medians, never single points: start = median of the first 5 % of finite points,
    end = median of the last 10 %, best = minimum of a centred rolling median (window n/50, >= 5).
    Noise guard: end - best must exceed ``noise_sigmas`` (3) x the MAD-sigma of the points around
    the smoothed trend (or of successive differences, whichever is larger) and ``min_rel_rise``
    (5 %) of the best level, with >= ``min_points`` (30) points, so noisy-but-healthy curves (diffusion
    losses) and quantised near-zero losses do not fire. A run that never improved beyond that
    guard is judged only by its end vs its start. ``error`` when the end is above the start,
    or when >= ``error_lost`` (50 %) of the improvement start -> best has been given back;
    ``warning`` when >= ``warn_lost`` (25 %). Onset = the last point where the smoothed loss was
    still within half of the rise above the best. The early warm-up rise cannot fire because the
    start level is a median and the end level is measured over the last 10 %.

Known false positives
    Runs whose objective legitimately rises: a curriculum that gets harder, a loss-weight or
    data-mixture schedule, RL objectives. Without train/loss the rule is applied to val/loss.

References
    llm-foundry KillLossSpike "high loss" rule (half the window above a cap); Lightning EarlyStopping
    ``divergence_threshold``; stabdiag peers review (trainproof's false "End loss 0.000 vs Min 0.000"
    on a quantised loss; runmedic's false divergence on a noisy diffusion loss).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stabdiag import words
from stabdiag.detectors import _stats as st
from stabdiag.detectors import loss_spike
from stabdiag.detectors._common import finding, loss_metric
from stabdiag.detectors.base import Detector
from stabdiag.findings import Finding, Severity, Skipped
from stabdiag.table import LR, TRAIN_LOSS, VAL_LOSS, RunData, Series

CODE, KIND = "SD102", "divergence"


@dataclass(frozen=True, kw_only=True)
class Config:
    """Thresholds of the divergence check (``[tool.stabdiag.detectors.divergence]``)."""

    min_points: int = 30
    """Finite loss points needed to judge the trend at all; fewer are "not checked"."""
    start_frac: float = 0.05
    """The start level is the median of the first 5 % of finite points (at least 5): a median, so
    the warm-up's first rise cannot count as divergence."""
    end_frac: float = 0.10
    """The end level is the median of the last 10 % of finite points (at least 5)."""
    noise_sigmas: float = 3.0
    """A rise must exceed this many noise sigmas (MAD around the smoothed trend, or of successive
    differences if larger), so a noisy but healthy curve (a diffusion loss) does not fire."""
    min_rel_rise: float = 0.05
    """... and this share (5 %) of the best level, so a quantised near-zero loss does not fire."""
    warn_lost: float = 0.25
    """A sustained rise that gave back this share (25 %) of the improvement from start to best is a
    warning."""
    error_lost: float = 0.50
    """A rise that has not come back by the end and gave back this share (50 %) of the improvement
    is an error, as is an end above the start."""
    val_min_points: int = 3
    """Validation points needed for the overfitting rule (val loss up while train loss falls)."""
    val_min_rise: float = 0.05
    """The last validation loss must be this share (5 %) above its best for overfitting (info)."""
    first_points: int = 3
    """Where the run started, for the runaway rule: the median of the first logged values (the
    first alone when the run blew up at once, as with LR 1.0 from step 0)."""
    runaway_rel: float = 0.10
    """A smoothed loss this share (10 %) above the start level (or above ln(vocab size) when it is
    known and higher) is a runaway, once it also clears ``noise_sigmas``."""
    runaway_error_frac: float = 0.10
    """A runaway lasting this share (10 %) of the points (at least three smoothing windows), or
    still going at the end, is an error; a shorter one that came back is a warning."""
    runaway_merge_frac: float = 0.10
    """Runaway excursions closer than this share (10 %) of the points (at least two smoothing
    windows) are one episode."""
    chaos_cover: float = 0.3
    """When the raw loss is above the runaway bar this often between the first and the last
    excursion, the whole stretch is one chaotic episode."""
    rise_min_points: int = 10
    """A rise must last this many log points (at least one smoothing window) to be sustained;
    shorter ones are the loss-spike check's business."""
    rel_rise_warn: float = 0.10
    """A sustained rise this large relative to the level it rose from (10 %) is a warning even when
    it gave back less than ``warn_lost`` of the improvement."""
    recovered_frac: float = 0.2
    """The loss is back when the smoothed curve is within this share (20 %) of the rise above the
    trough it rose from (and the end level is too): such a rise is a warning."""


DEFAULT = Config()


def _trend(s: Series, cfg: Config) -> tuple[np.ndarray, np.ndarray, int, np.ndarray] | None:
    """Finite steps and values, the smoothing window and the centred rolling median (shared with
    stall through the per-series cache), or None when there are too few points to judge."""
    tr = st.loss_trend(s.values, s.steps)
    return tr if len(tr[1]) >= cfg.min_points else None


def _levels(
    x: np.ndarray, smooth: np.ndarray, w: int, cfg: Config
) -> tuple[float, float, int, float]:
    """start level, best (smoothed) level, its index, and the point noise around the trend."""
    n = len(x)
    start = float(np.median(x[: max(5, int(cfg.start_frac * n))]))
    half = w // 2  # centred windows are partial at both edges: keep them out of "best"
    bi = half + int(np.argmin(smooth[half : n - half])) if n > 2 * half else int(np.argmin(smooth))
    noise = max(
        st.robust_sigma(x - smooth), st.DIFF_TO_SIGMA * float(np.median(np.abs(np.diff(x))))
    )
    return start, float(smooth[bi]), bi, noise


def _lr_note(run: RunData, step: int) -> tuple[str, float | None, float | None]:
    """ ", when the LR had decayed to X (N% of its peak Y)" if the LR at ``step`` is well below its
    peak (a loss that came back only because the schedule took the LR away), else ""."""
    lr = run.get(LR)
    if lr is None:
        return "", None, None
    ok = np.isfinite(lr.values)
    if not ok.any():
        return "", None, None
    peak = float(np.max(lr.values[ok]))
    at = st.value_at(lr.steps, lr.values, step)
    if at is None or peak <= 0 or at > 0.5 * peak:
        return "", at, peak
    return (
        (
            f", when the LR had decayed to {st.fmt(at)} ({st.pct(at / peak)} of its peak "
            f"{st.fmt(peak)})"
        ),
        at,
        peak,
    )


def _onset(smooth: np.ndarray, lo: int, hi: int) -> int:
    """Where a rise from the trough ``lo`` to the peak ``hi`` began: a change point, not the step a
    threshold was crossed. A hinge (flat at the trough level, then a straight ramp) is fitted by
    least squares to the smoothed curve from the trough to where it first got three quarters of
    the way up; the hinge is the onset. A later dip back (a noisy plateau) cannot move it."""
    base, top = float(smooth[lo]), float(smooth[hi])
    seg = smooth[lo : hi + 1]
    up = np.flatnonzero(seg >= base + 0.75 * (top - base))
    m = (int(up[0]) if up.size else len(seg) - 1) + 1
    if m < 3:
        return lo
    d = seg[:m] - base
    i = np.arange(m, dtype=np.float64)
    # suffix sums over i >= k of d, i*d, i, i^2, 1 and prefix sums of d^2 (SSE of the flat part)
    rs = lambda a: np.cumsum(a[::-1])[::-1]  # noqa: E731
    s0, s1, q1, q2, cnt = rs(d), rs(i * d), rs(i), rs(i * i), rs(np.ones(m))
    d2 = np.cumsum(d * d)
    k = np.arange(m, dtype=np.float64)
    num = s1 - k * s0
    den = q2 - 2 * k * q1 + k * k * cnt
    with np.errstate(invalid="ignore", divide="ignore"):
        ramp_sse = rs(d * d) - np.where(den > 0, num * num / den, 0.0)
    flat_sse = np.r_[0.0, d2[:-1]]
    return lo + int(np.argmin(flat_sse + ramp_sse))


def _spike_covers(run: RunData, steps: np.ndarray, a: int, b: int, w: int) -> bool:
    """Whether a loss-spike event already tells the excursion steps[a]..steps[b] (no double report)."""
    s = run.get(loss_metric(run))
    if s is None:
        return False
    for ev in loss_spike.run_events(run):
        end = ev.recovery if ev.recovery >= 0 else ev.end
        on, off = int(s.steps[ev.onset]), int(s.steps[max(end, ev.onset)])
        pad = w * st.log_interval(steps)
        if on <= steps[a] + pad and off >= steps[b] - pad:
            return True
    return False


def _episodes(mask: np.ndarray, weight: np.ndarray, gap: int) -> tuple[int, int]:
    """The heaviest episode of ``mask`` (sum of ``weight``), runs closer than ``gap`` points merged."""
    a_idx, b_idx = st.segments(mask)
    segs: list[list[int]] = []
    for a, b in zip(a_idx.tolist(), b_idx.tolist(), strict=True):
        if segs and a - segs[-1][1] <= gap:
            segs[-1][1] = b
        else:
            segs.append([a, b])
    a, b = max(segs, key=lambda ab: float(np.sum(weight[ab[0] : ab[1] + 1])))
    return a, b


def _runaway(run: RunData, s: Series, metric: str, name: str, cfg: Config) -> list[Finding]:
    """A loss far above where the run started, sustained (the smoothed curve, not one point)."""
    tr = _trend(s, cfg)
    if tr is None:
        return []
    steps, x, w, smooth = tr
    n = len(x)
    k0 = min(n, cfg.first_points)
    # Where the run started: the first logged values, or the very first one when the run blew up
    # at once (LR 1.0 from step 0: the second and third values are already the runaway).
    first = min(float(np.median(x[:k0])), float(x[0]))
    if first == float(x[0]) and k0 > 1 and float(np.median(x[:k0])) != first:
        k0 = 1
    vocab = run.meta.get("vocab_size")
    ln_v = (
        math.log(vocab) if isinstance(vocab, int) and vocab > 1 and metric == TRAIN_LOSS else None
    )
    ref = max(first, ln_v or -math.inf)
    bar = ref * (1 + cfg.runaway_rel)
    first_up = np.flatnonzero(smooth > bar)
    if not first_up.size:
        return []
    # Noise of the healthy part before the excursion (a chaotic episode would swamp any whole-run
    # estimate): the excursion must clear it too.
    pre = int(first_up[0])
    if pre >= 10:
        noise = max(
            st.robust_sigma(x[:pre] - smooth[:pre]),
            st.DIFF_TO_SIGMA * float(np.median(np.abs(np.diff(x[:pre])))),
        )
    else:
        noise = _levels(x, smooth, w, cfg)[3]
    bar = max(bar, ref + cfg.noise_sigmas * noise)
    above = smooth > bar
    if not above.any():
        return []
    a_all, b_all = int(np.flatnonzero(above)[0]), int(np.flatnonzero(above)[-1])
    if (x[a_all : b_all + 1] > bar).mean() >= cfg.chaos_cover:
        a, b = (
            a_all,
            b_all,
        )  # above most of the time between its first and last excursion: one episode
    else:
        a, b = _episodes(above, np.ones(n), max(2 * w, int(cfg.runaway_merge_frac * n)))
    raw_up = np.flatnonzero(x[a : b + 1] > bar)
    a = a + int(raw_up[0]) if raw_up.size else a  # a centred median leads by half a window
    ends_in_it = b >= n - 1 - w // 2
    long = (b - a + 1) >= max(cfg.runaway_error_frac * n, 3 * w)
    if not long and not ends_in_it and _spike_covers(run, steps, a, b, w):
        return []  # a short excursion the loss-spike finding already reports
    pk = a + int(np.argmax(x[a : b + 1]))
    trough = int(np.argmin(smooth[: a + 1])) if a > 0 else 0
    on = _onset(smooth, trough, a)
    back = b + 1 if not ends_in_it else None
    sev = Severity.ERROR if long or ends_in_it else Severity.WARNING
    ref_txt = (
        (
            f"its first logged value ({st.fmt(first)} at step {int(steps[0])})"
            if k0 == 1
            else f"where it started (median {st.fmt(first)} of the first {k0} logged values, steps "
            f"{int(steps[0])}-{int(steps[k0 - 1])}, computed)"
        )
        if ref == first
        else f"ln(vocab) = {st.fmt(ref)} (vocab {vocab}: uniform guessing)"
    )
    lr_txt, lr_at, lr_peak = (
        _lr_note(run, int(steps[back])) if back is not None else ("", None, None)
    )
    cover = float((x[a : b + 1] > bar).mean())
    span = (
        f"it stayed above for {words.count(int(steps[b] - steps[a]), 'step')}"
        if cover > 0.9
        else f"it was above in {st.pct(cover)} of the points from step {int(steps[a])} to {int(steps[b])}"
    )
    if back is None:
        tail = (
            f"{span} and is still there at the end (median of the last points "
            f"{st.fmt(float(np.median(x[-max(5, w) :])))}, computed)"
        )
    else:
        tail = f"{span} and settled below that level only from step {int(steps[back])}{lr_txt}"
    chaotic = long and float(np.std(np.diff(np.log(np.clip(x[a : b + 1], 1e-12, None))))) > 0.3
    msg = (
        f"{name} ran away: above {ref_txt} from step {int(steps[a])}, "
        f"up to {st.fmt(float(x[pk]))} at step {int(steps[pk])}"
        f"{' (chaotic: it jumped by large factors from point to point)' if chaotic else ''}; "
        f"{tail}."
    )
    return [
        finding(
            CODE,
            KIND,
            run,
            severity=sev,
            metric=metric,
            step_start=int(steps[on]),
            step_end=int(steps[b]),
            message=msg,
            evidence={
                "rule": "runaway",
                "reference_level": ref,
                "first_logged": first,
                "ln_vocab": ln_v,
                "peak": float(x[pk]),
                "peak_step": int(steps[pk]),
                "above_from_step": int(steps[a]),
                "above_until_step": int(steps[b]),
                "onset_step": int(steps[on]),
                "recovered_step": None if back is None else int(steps[back]),
                "lr_at_recovery": lr_at,
                "lr_peak": lr_peak,
                "chaotic": chaotic,
                "ends_above_start": back is None,
                "recovered": back is not None,
                "smoothing_window_points": w,
            },
        )
    ]


def _rise(run: RunData, s: Series, metric: str, name: str, cfg: Config) -> list[Finding]:
    """The largest sustained rise of the smoothed loss anywhere in the run (end or mid-run)."""
    tr = _trend(s, cfg)
    if tr is None:
        return []
    steps, x, w, smooth = tr
    n = len(x)
    start, best, bi, noise = _levels(x, smooth, w, cfg)
    half = w // 2
    core = smooth.copy()
    if half:
        core[:half] = np.inf  # partial windows at the edges: not a trough
    run_min = np.minimum.accumulate(core)
    excess = np.where(np.isfinite(run_min), smooth - run_min, 0.0)
    excess[n - half :] = np.minimum(
        excess[n - half :], excess[n - half - 1] if n - half - 1 >= 0 else 0.0
    )
    guard = max(cfg.noise_sigmas * noise, cfg.min_rel_rise * abs(best))
    mask = excess > guard
    if not mask.any():
        return []
    a, b = _episodes(mask, excess, 2 * w)  # noisy plateaus dip back now and then: one episode
    t = int(np.argmin(core[: a + 1]))
    p = a + int(np.argmax(smooth[a : b + 1]))
    trough, rise = float(smooth[t]), float(smooth[p] - smooth[t])
    if (b - a + 1) < max(cfg.rise_min_points, w):
        return []
    improvement = start - trough
    lost = rise / improvement if improvement > guard else math.inf
    end_k = max(5, int(cfg.end_frac * n))
    end = float(np.median(x[-end_k:]))
    after = smooth[p:]
    home = trough + max(guard, cfg.recovered_frac * rise)  # back near the level it rose from
    back_i = np.flatnonzero(after <= home)
    recovered = back_i.size > 0 and end <= home
    above_start = (
        (end > start + (guard if improvement <= guard else 0.0)) if not recovered else False
    )
    # The part of the rise that held: the level the smoothed loss stayed at or above for the
    # sustained length (a spike's peak on top of it does not count).
    stop = p + int(back_i[0]) + 1 if recovered else n
    k = max(cfg.rise_min_points, w)
    seg = np.sort(smooth[t:stop])
    held = float(seg[-k]) - trough if len(seg) >= k else 0.0
    if held <= guard:
        return []  # up and straight back down: a spike's business, not a sustained rise
    lost_held = held / improvement if improvement > guard else math.inf
    if lost_held < cfg.warn_lost and not above_start and held < cfg.rel_rise_warn * abs(trough):
        return []
    if recovered and _spike_covers(run, steps, a, b, w):
        return []  # a loss spike that took a while to recover: the loss-spike finding tells it
    on = _onset(smooth, t, p)
    if recovered:
        back = p + int(back_i[0])
        sev = Severity.WARNING
        lr_txt, lr_at, lr_peak = _lr_note(run, int(steps[back]))
        given = (
            f"{st.pct(min(lost, 1.0))} of the improvement so far given back"
            if math.isfinite(lost) and lost <= 1.0
            else f"above its start level {st.fmt(start)}"
        )
        how = (
            f"rose for {words.count(int(steps[p] - steps[on]), 'step')} from step {int(steps[on])} "
            f"(about {st.fmt(trough)}) to about {st.fmt(float(smooth[p]))} at step {int(steps[p])} "
            f"(smoothed medians, computed; {given}), then came back by step {int(steps[back])}{lr_txt}"
        )
        msg = f"{name} {how}{_val_too(run, metric, int(steps[on]), int(steps[back]))}."
        step_end = int(steps[back])
    else:
        back, lr_at, lr_peak = None, None, None
        lost_end = (end - trough) / improvement if improvement > guard else math.inf
        sev = Severity.ERROR if above_start or lost_end >= cfg.error_lost else Severity.WARNING
        levels = (
            f"{st.fmt(start)} at the start, best {st.fmt(trough)} at step {int(steps[t])}, "
            f"{st.fmt(end)} at the end (medians, computed)"
        )
        it = (
            f"ends above where it started: {levels}"
            if above_start
            else f"gave back {st.pct(min(lost_end, 1.0)) if math.isfinite(lost_end) else 'all'} of its "
            f"improvement: {levels}"
        )
        msg = f"{name} rose from step {int(steps[on])} and did not come back: it {it}."
        step_end = int(steps[-1])
    return [
        finding(
            CODE,
            KIND,
            run,
            severity=sev,
            metric=metric,
            step_start=int(steps[on]),
            step_end=step_end,
            message=msg,
            evidence={
                "rule": "rise",
                "start_level": start,
                "best_level": trough,
                "best_step": int(steps[t]),
                "peak_level": float(smooth[p]),
                "peak_step": int(steps[p]),
                "end_level": end,
                "onset_step": int(steps[on]),
                "recovered": recovered,
                "recovered_step": None if back is None else int(steps[back]),
                "fraction_of_improvement_lost": lost if math.isfinite(lost) else None,
                "ends_above_start": above_start,
                "noise_sigma": noise,
                "lr_at_recovery": lr_at,
                "lr_peak": lr_peak,
            },
        )
    ]


def _val_too(run: RunData, metric: str, lo: int, hi: int) -> str:
    """ "; the validation loss rose too (A at step S -> B at step T)" when it did, quoting the log."""
    v = run.get(VAL_LOSS) if metric == TRAIN_LOSS else None
    if v is None:
        return ""
    ok = np.isfinite(v.values)
    vs, vx = v.steps[ok], v.values[ok]
    before = np.flatnonzero(vs <= lo)
    inside = np.flatnonzero((vs > lo) & (vs <= hi))
    if not before.size or not inside.size:
        return ""
    i0, i1 = int(before[-1]), int(inside[np.argmax(vx[inside])])
    if vx[i1] <= 1.05 * vx[i0]:
        return ""
    return (
        f"; the validation loss rose too ({st.fmt(float(vx[i0]))} at step {int(vs[i0])} -> "
        f"{st.fmt(float(vx[i1]))} at step {int(vs[i1])})"
    )


def _train_rule(run: RunData, s: Series, metric: str, cfg: Config) -> list[Finding]:
    """Whole-run judgement of one loss: runaway first (the worst), else the largest sustained rise."""
    name = "training loss" if metric == TRAIN_LOSS else "validation loss"
    out = _runaway(run, s, metric, name, cfg)
    if out and out[0].severity >= Severity.ERROR:
        return out
    rise = _rise(run, s, metric, name, cfg)
    if out and rise and rise[0].severity <= out[0].severity:
        return out
    return rise or out


def _overfit_rule(run: RunData, cfg: Config) -> list[Finding]:
    v, t = run.get(VAL_LOSS), run.get(TRAIN_LOSS)
    if v is None or t is None:
        return []
    ok = np.isfinite(v.values)
    vs, vx = v.steps[ok], v.values[ok]
    if len(vx) < cfg.val_min_points:
        return []
    bi = int(np.argmin(vx))
    vend = float(vx[-1])
    if bi == len(vx) - 1 or vend < (1 + cfg.val_min_rise) * vx[bi]:
        return []
    tf = np.isfinite(t.values)
    ts, tx = t.steps[tf], t.values[tf]
    at_best = st.nanmedian(tx[(ts <= vs[bi])][-5:])
    t_end = st.nanmedian(tx[-5:])
    if not (np.isfinite(at_best) and np.isfinite(t_end) and t_end <= at_best):
        return []  # train loss rising too: the train rule speaks for it
    msg = (
        f"validation loss rose {st.fmt(float(vx[bi]))} -> {st.fmt(vend)} after step {int(vs[bi])} while "
        f"the training loss kept falling ({st.fmt(at_best)} -> {st.fmt(t_end)}): overfitting, not divergence."
    )
    return [
        finding(
            CODE,
            KIND,
            run,
            severity=Severity.INFO,
            metric=VAL_LOSS,
            step_start=int(vs[bi]),
            step_end=int(vs[-1]),
            message=msg,
            evidence={
                "overfitting": True,
                "best_val_loss": float(vx[bi]),
                "best_val_step": int(vs[bi]),
                "final_val_loss": vend,
                "train_loss_at_best_val": at_best,
                "final_train_loss": t_end,
            },
        )
    ]


def check(run: RunData, cfg: Config = DEFAULT) -> list[Finding] | Skipped:
    t, v = run.get(TRAIN_LOSS), run.get(VAL_LOSS)
    base = t if t is not None else v
    if base is None:
        return DETECTOR.skipped(run, f"no {TRAIN_LOSS} or {VAL_LOSS} series")
    if np.isfinite(base.values).sum() < cfg.min_points and (v is None or t is None):
        name = TRAIN_LOSS if t is not None else VAL_LOSS
        return DETECTOR.skipped(run, f"{name} has too few finite points ({cfg.min_points} needed)")
    out = _train_rule(run, base, TRAIN_LOSS if t is not None else VAL_LOSS, cfg)
    return out + _overfit_rule(run, cfg)


DETECTOR = Detector(
    code=CODE,
    kind=KIND,
    summary="loss rises and does not come back, or ends above its start",
    doc=__doc__ or "",
    check=check,
    config=Config,
)
