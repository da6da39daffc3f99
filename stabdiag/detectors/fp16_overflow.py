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
    Scale values of -1 ("no scaler") and non-finite values are ignored. Start-up is counted in
    absolute steps: the first max(``startup_steps`` (50), ``startup_frac`` (3 %) of the last step)
    steps, extended over the initial cascade of drops (``cascade_steps`` apart) when the log begins
    there; a log that begins mid-run (a fragment at iteration 29 000) has no start-up. After it each
    visible drop is judged against the settled scale (the level that held >= ``settle_steps``):
    a drop that lands at or above it only undoes a growth step (probing: DeepSpeed's
    loss_scale_window sawtooth, GradScaler's growth_interval) and is benign at any frequency; a drop
    below it is a real overflow; a drop across a hole in the log (``gap_intervals`` log intervals) is
    not judged. ``error`` when real overflows take the scale to <= ``min_scale`` (1) or
    ``collapse_factor`` (1024) below the settled scale; ``warning`` when the scale ends
    ``decline_factor`` (16) below it, or when a cascade of real overflows (each within
    ``cascade_gap`` (100) steps of the last) takes it ``episode_depth`` (8x) below, or
    ``cluster_count`` (4) real overflows fall within ``cluster_steps`` (500) of each other. With skipped steps but no scale logged, a burst of ``cluster_count`` skips inside
    ``cluster_steps`` that is ``burst_factor`` (3x) denser than the run's own rate is a warning;
    a steady rate is the sawtooth. Everything else is ``info``.

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
from dataclasses import dataclass, replace

import numpy as np

from stabdiag import words
from stabdiag.detectors import _stats as st
from stabdiag.detectors._common import finding
from stabdiag.detectors.base import Detector
from stabdiag.findings import Finding, Severity, Skipped
from stabdiag.table import LOSS_SCALE, SKIPPED_STEP, RunData, Series

CODE, KIND = "SD301", "fp16-overflow"


@dataclass(frozen=True, kw_only=True)
class Config:
    """Thresholds of the fp16-overflow check (``[tool.stabdiag.detectors.fp16-overflow]``)."""

    startup_steps: int = 50
    """Drops within the first max(50 steps, ``startup_frac`` of the last step) are the scaler's
    start-up search down from its initial scale (2^16 in PyTorch GradScaler and DeepSpeed, 2^32 in
    Megatron): info, never a warning."""
    startup_frac: float = 0.03
    """... or within the first 3 % of the run's steps, whichever is longer."""
    min_scale: float = 1.0
    """Real overflows taking the scale to this value or below are an error: DeepSpeed's
    ``min_loss_scale`` (1), where it aborts; the scaler cannot back off any further."""
    collapse_factor: float = 1024.0
    """Real overflows taking the scale this far (1024x) below the settled scale are an error: the
    run overflows fp16 on nearly every step."""
    decline_factor: float = 16.0
    """A scale that ends the log this far (16x) below the settled scale is a warning."""
    cluster_steps: int = 500
    """Window for clusters: ``cluster_count`` real overflows within this many steps are a warning
    (with skips but no scale logged: a burst of skips this close, see ``burst_factor``)."""
    cluster_count: int = 4
    """Real overflows (or skips) within ``cluster_steps`` that make a cluster."""
    cascade_steps: int = 10
    """Drops this close after the start-up still belong to the start-up search."""
    settle_steps: int = 50
    """A scale held this many steps is the settled scale that later drops are judged against: a
    drop landing at or above it only undoes a growth step (the periodic sawtooth), at any
    frequency."""
    episode_depth: float = 8.0
    """A cascade of real overflows taking the scale this far (8x) below the settled scale is a
    warning."""
    gap_intervals: int = 10
    """A drop across a hole in the log this many log intervals wide is not judged: what happened in
    between is unknown."""
    cascade_gap: int = 100
    """Real overflows within this many steps of the previous one are one cascade, judged by its
    depth (``episode_depth``)."""
    burst_factor: float = 3.0
    """With skipped steps but no scale logged, a cluster of skips at least this many times (3x)
    denser than the run's own rate is a warning; a steady rate is the sawtooth."""


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
        sk is not None and bool(np.any(skip_counts(sk.values) > 0))
    )


def _max_in_window(steps: np.ndarray, weights: np.ndarray, width: int) -> tuple[int, int]:
    """Largest total weight of events within ``width`` steps, and the step where that window starts."""
    if not len(steps):
        return 0, 0
    csum = np.concatenate([[0], np.cumsum(weights)])
    hi = np.searchsorted(steps, steps + width, side="right")
    tot = csum[hi] - csum[np.arange(len(steps))]
    k = int(np.argmax(tot))
    return int(tot[k]), int(steps[k])


def is_fp16_run(run: RunData) -> bool:
    """fp16 by the data (a varying scale or skipped steps) or by what the logs say of the run
    (``precision`` in the run's metadata: a loss-scaler line, an fp16 flag in a config)."""
    prec = str(run.meta.get("precision", "")).lower()
    return is_fp16(run) or prec in ("fp16", "float16", "half", "16", "16-mixed", "amp-fp16")


@dataclass(frozen=True)
class Drop:
    """One scale drop after start-up: where, from what to what, and what it was ("probe": undoes a
    recent growth; "overflow": below the settled scale; "gap": across a hole in the log)."""

    step: int
    before: float
    after: float
    settled: float  # the settled scale it is judged against
    kind: str


def startup_end(sc: Series | None, sk: Series | None, cfg: Config) -> int:
    """Last step of the start-up scale search, in absolute step numbers: the first
    max(startup_steps, startup_frac of the run) steps, extended over the initial cascade of drops
    when the log begins there. A log that begins later (a fragment at iteration 29 000) has none."""
    hi = max(int(x.steps[-1]) for x in (sc, sk) if x is not None)
    end = max(cfg.startup_steps, int(cfg.startup_frac * hi))
    if sc is None or int(sc.steps[0]) > end or len(sc) < 2:
        return end
    drops = np.flatnonzero(sc.values[1:] < sc.values[:-1]) + 1
    last = None
    for i in drops:
        if int(sc.steps[i]) <= end or (
            last is not None and int(sc.steps[i]) - last <= cfg.cascade_steps
        ):
            last = int(sc.steps[i])
        else:
            break
    return max(end, last or end)


def classify_drops(sc: Series, after_step: int, cfg: Config) -> list[Drop]:
    """Each visible drop after ``after_step``, judged against the settled scale: the scale that
    held for at least ``settle_steps`` before it. A drop that lands at or above the settled scale
    only undoes growth (the scaler probing upwards: benign); one below it is a real overflow."""
    steps, v = sc.steps, sc.values
    out: list[Drop] = []
    pre = np.flatnonzero(steps <= after_step)
    settled = float(v[pre[-1]]) if pre.size else float(v[0])
    held_from = int(steps[pre[-1]]) if pre.size else int(steps[0])
    level = settled
    gap = cfg.gap_intervals * st.log_interval(steps)
    for i in range(1, len(v)):
        if steps[i] <= after_step:
            continue
        if v[i] != level and int(steps[i]) - held_from >= cfg.settle_steps:
            settled = level  # the level that changed at step i had held long enough
        if v[i] < v[i - 1]:
            kind = "probe" if v[i] >= settled else "overflow"
            if int(steps[i] - steps[i - 1]) > gap:
                kind = "gap"  # fell somewhere in a hole of the log: where and how is unknown
            out.append(Drop(int(steps[i]), float(v[i - 1]), float(v[i]), settled, kind))
            if kind == "overflow":
                settled = float(v[i])
        if v[i] != level:
            level, held_from = float(v[i]), int(steps[i])
    return out


def _episodes(drops: list[Drop], gap: int) -> list[list[Drop]]:
    """Real overflows grouped into episodes (consecutive ones within ``gap`` steps)."""
    eps: list[list[Drop]] = []
    for d in (d for d in drops if d.kind == "overflow"):
        if eps and d.step - eps[-1][-1].step <= gap:
            eps[-1].append(d)
        else:
            eps.append([d])
    return eps


def check(run: RunData, cfg: Config = DEFAULT) -> list[Finding] | Skipped:
    """The run's own scaler, then every other engine's (``critic/loss_scale`` of an RLHF log with
    two DeepSpeed engines), each judged on its own scale chain."""
    out = _check_family(run, cfg)
    others = sorted(
        m[: -len("/loss_scale")]
        for m in run.series
        if m.endswith("/loss_scale") and m != LOSS_SCALE
    )
    found = [] if isinstance(out, Skipped) else list(out)
    for fam in others:
        view = replace(
            run,
            series={
                k: v
                for k, v in {
                    LOSS_SCALE: run.series.get(f"{fam}/loss_scale"),
                    SKIPPED_STEP: run.series.get(f"{fam}/skipped_step"),
                }.items()
                if v is not None
            },
        )
        res = _check_family(view, cfg)
        if isinstance(res, Skipped):
            continue
        for f in res:
            found.append(
                replace(
                    f,
                    metric=f"{fam}/loss_scale" if f.metric == LOSS_SCALE else f"{fam}/skipped_step",
                    message=f"{fam} engine: {f.message[0].lower()}{f.message[1:]}",
                )
            )
    if isinstance(out, Skipped) and not found:
        return out
    return found


def _check_family(run: RunData, cfg: Config) -> list[Finding] | Skipped:
    sc = scale_series(run)
    sk = run.get(SKIPPED_STEP)
    if sc is None and sk is None:
        return DETECTOR.skipped(
            run, f"no {LOSS_SCALE} or {SKIPPED_STEP} series (not an fp16 run, or not logged)"
        )
    su_end = startup_end(sc, sk, cfg)
    skip_steps = np.empty(0, np.int64)
    n_skipped = 0
    if sk is not None:
        v = skip_counts(sk.values)
        skip_steps = sk.steps[v > 0]
        n_skipped = int(np.round(v[v > 0]).clip(min=1).sum())
    drops = classify_drops(sc, su_end, cfg) if sc is not None and len(sc) > 1 else []
    su_drops = 0
    if sc is not None and len(sc) > 1:
        d_all = np.flatnonzero(sc.values[1:] < sc.values[:-1]) + 1
        su_drops = int(np.sum(sc.steps[d_all] <= su_end))
    su_skips = int(np.sum(skip_steps <= su_end))
    late_skips = int(np.sum(skip_steps > su_end))
    if not drops and not su_drops and not len(skip_steps):
        return []
    probes = [d for d in drops if d.kind == "probe"]
    real = [d for d in drops if d.kind == "overflow"]
    ev: dict = {
        "startup_end_step": su_end,
        "startup_events": max(su_drops, su_skips),
        "probes": len(probes),
        "real_overflows": len(real),
        "skipped_steps": n_skipped,
        "late_skips": late_skips,
        "min_scale": None,
        "settled_scale": None,
        "final_scale": None,
        "overflow_steps": [d.step for d in real][:50],
    }
    sev, what, start, end = Severity.INFO, "", None, None
    if sc is not None:
        post = sc.values[sc.steps > su_end]
        if post.size:
            ref = max([d.settled for d in drops] + [float(np.median(post))])
            mn, final = float(np.min(post)), float(sc.values[-1])
            at = int(sc.steps[sc.steps > su_end][int(np.argmin(post))])
            ev.update(min_scale=mn, settled_scale=ref, final_scale=final, min_scale_step=at)
            if real and (mn <= cfg.min_scale or mn <= ref / cfg.collapse_factor):
                sev = Severity.ERROR
                what = (
                    f"the fp16 loss scale collapsed from a settled {st.fmt(ref)} to {st.fmt(mn)} at step {at} "
                    f"({words.count(round(math.log2(max(ref / mn, 1.0))), 'halving')}): gradients overflow "
                    "fp16 even at a tiny scale"
                )
                start, end = real[0].step, at
            elif (
                real
                and final <= ref / cfg.decline_factor
                and at >= int(sc.steps[-1]) - cfg.settle_steps
            ):
                sev = Severity.WARNING
                what = (
                    f"the fp16 loss scale fell from a settled {st.fmt(ref)} to {st.fmt(final)} from step "
                    f"{real[0].step} and was still there at the end of the log, step {int(sc.steps[-1])}"
                )
                start, end = real[0].step, int(sc.steps[-1])
    if sev == Severity.INFO:
        # A cascade (overflows in quick succession) that takes the scale far down, or many
        # overflows inside a cluster window; isolated ones far apart compound only because growth
        # is slow, and stay info.
        cascades = _episodes(drops, cfg.cascade_gap)
        deep = max(cascades, key=lambda e: e[0].settled / e[-1].after, default=None)
        many = max(_episodes(drops, cfg.cluster_steps), key=len, default=None)
        worst = None
        if deep is not None and deep[0].settled / deep[-1].after >= cfg.episode_depth:
            worst = deep
        elif many is not None and len(many) >= cfg.cluster_count:
            worst = many
        if worst is not None:
            depth = worst[0].settled / worst[-1].after
            sev = Severity.WARNING
            where = (
                f"a real overflow at step {worst[0].step}"
                if len(worst) == 1
                else f"{len(worst)} real overflows from step {worst[0].step} to {worst[-1].step}"
            )
            what = (
                f"the fp16 loss scale fell below its settled value {st.fmt(worst[0].settled)}: "
                f"{where} took it down to {st.fmt(worst[-1].after)} "
                f"({st.fmt(depth)}x lower, no growth step undone)"
            )
            start, end = worst[0].step, worst[-1].step
            ev["episode_depth"] = depth
    if sev == Severity.INFO and (sc is None or not drops) and late_skips >= cfg.cluster_count:
        # Skips without a visible scale: a burst far denser than the run's own rate is overflow
        # trouble; a steady periodic rate (the scaler's sawtooth) is not, however frequent.
        late = skip_steps[skip_steps > su_end]
        count, wstart = _max_in_window(late, np.ones(len(late), np.int64), cfg.cluster_steps)
        last = max(int(x.steps[-1]) for x in (sc, sk) if x is not None)
        span = max(cfg.cluster_steps, last - su_end)
        expected = len(late) * cfg.cluster_steps / span
        if count >= cfg.cluster_count and count >= cfg.burst_factor * expected:
            sev = Severity.WARNING
            what = (
                f"{count} fp16 overflows (skipped steps) clustered within {cfg.cluster_steps} steps from "
                f"step {wstart}, {st.fmt(count / max(expected, 1e-9))}x the run's own rate"
            )
            start, end = (
                wstart,
                int(late[np.searchsorted(late, wstart + cfg.cluster_steps, side="right") - 1]),
            )
    if sev == Severity.INFO:
        parts = []
        if su_drops or su_skips:
            parts.append(
                f"{words.count(max(su_drops, su_skips), 'drop or skip', 'drops or skips')} during "
                f"the start-up scale search (steps <= {su_end})"
            )
        if probes:
            parts.append(
                f"{words.count(len(probes), 'drop')} that only undid a growth step (the scaler "
                "probing upwards, the periodic sawtooth of dynamic loss scaling)"
            )
        if real:
            parts.append(
                f"{words.count(len(real), 'isolated real overflow')} "
                f"(at {', '.join(str(d.step) for d in real[:5])}{', ...' if len(real) > 5 else ''})"
            )
        if not parts and late_skips:
            parts.append(f"{words.count(late_skips, 'skipped step')} with no visible scale drop")
        what = "loss scaling (fp16): " + "; ".join(parts) + ": benign"
        ev_steps = [d.step for d in drops] + [int(x) for x in skip_steps]
        start = min(ev_steps) if ev_steps else (int(sc.steps[0]) if sc is not None else None)
        end = max(ev_steps) if ev_steps else start
    tail = f"; {words.count(n_skipped, 'skipped step')} in all" if n_skipped else ""
    return [
        finding(
            CODE,
            KIND,
            run,
            severity=sev,
            metric=LOSS_SCALE if sc is not None else SKIPPED_STEP,
            step_start=start,
            step_end=end,
            message=f"{what}{tail}.",
            evidence=ev,
        )
    ]


DETECTOR = Detector(
    code=CODE,
    kind=KIND,
    summary="fp16 loss-scale drops and skipped steps: benign search vs collapse",
    doc=__doc__ or "",
    check=check,
    config=Config,
)
