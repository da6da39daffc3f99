"""Plots: one figure per run with every stability metric on a shared step axis.

People find trouble faster by looking than by reading, so each figure puts the loss, grad norm,
LR, loss scale and any other stability metric the run logged one above the other. Sustained
findings (a divergence, a stall, a grad explosion) are shaded over their step range; point events
(a spike, an overflow, a NaN) get one marker per event on the curve they were found in and a tick
in the findings strip above the panels, where labels sit in lanes so they never overlap. Restarts
are dashed vertical lines, and a curve is broken at a restart and across a gap in the logging
instead of being joined by a straight line that no step ever logged.

Figures are built with ``matplotlib.figure.Figure`` directly, never through ``pyplot``: no global
state leaks between calls and nothing needs closing beyond dropping the reference. The layout is
fixed in inches (no constrained layout: it costs a full text layout per draw), every figure is
drawn once per image format, and each curve is thinned to a min/max envelope per pixel column
before drawing, so a one-step spike survives and nothing invisible is drawn. ``render_runs``
draws runs in worker processes (``jobs``) and hands back the image bytes; each process draws its
runs into one figure whose axes it keeps (``_Frame``), as building axes costs as much as drawing.
"""

from __future__ import annotations

import io
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.text import Text
from matplotlib.ticker import FixedLocator, Formatter, MaxNLocator, NullFormatter, NullLocator
from matplotlib.transforms import Bbox

from stabdiag.findings import Finding, Severity
from stabdiag.report import Report
from stabdiag.table import (
    GRAD_NORM,
    LOSS_SCALE,
    LR,
    MAX_ATTN_LOGIT,
    OUTPUT_LOGZ,
    PARAM_NORM,
    RESTART,
    SKIPPED_STEP,
    TRAIN_LOSS,
    UPDATE_RATIO,
    VAL_LOSS,
    MetricsTable,
    RunData,
    Series,
    is_canonical,
)

# Colour-blind-safe severity colours (Okabe-Ito): red-ish vermillion, orange, blue.
SEVERITY_COLOR = {Severity.ERROR: "#D55E00", Severity.WARNING: "#E69F00", Severity.INFO: "#0072B2"}
SEVERITY_ALPHA = {Severity.ERROR: 0.22, Severity.WARNING: 0.18, Severity.INFO: 0.10}
LINE = {"train": "#1f3b73", "val": "#CC79A7", "other": "#009E73"}
RESTART_COLOR = "#555555"

# Fixed layout, in inches: a left column for y labels, a right one for legends.
FIG_WIDTH, DPI = 11.0, 110
LEFT, RIGHT, TOP, BOTTOM, GAP = 0.95, 2.25, 0.5, 0.5, 0.34
PANEL_HEIGHT = {"loss": 2.0, "other": 1.45}
STRIP_HEIGHT = (0.7, 0.22)  # with findings to label / without
TEXT_RC = {"text.hinting": "no_hinting"}
"""Glyphs drawn as the font outlines them, without FreeType's hinting pass: text is most of a
figure's drawing time, and hinting alone a fifth of the whole; at 8-12 pt and 110 dpi the
difference is a slightly softer stem, the labels read the same. Set while a figure is built and
while it is drawn (``figure_bytes``), so labels are measured as they are drawn."""
XLABEL_DROP = 19.0
"""Points from the last panel's bottom edge to the top of its "step" label: under the 8 pt tick
labels, where matplotlib's automatic placement puts it."""
AXES_PX = int((FIG_WIDTH - LEFT - RIGHT) * DPI)  # pixel columns of a panel: the envelope's width

GAP_FACTOR = 10.0
"""A step gap wider than this many typical spacings (the median) breaks the curve."""
PLOTTABLE = 1e100
"""Larger magnitudes are marked on the top edge, not drawn (matplotlib's axis arithmetic overflows)."""
MAX_UNKNOWN_PANELS = 6
"""A run with no stability metric under a known name shows this many of its own series."""
POINT_KINDS = frozenset(
    {
        "loss-spike",
        "grad-spike",
        "nonfinite",
        "rl-nonfinite",
        "fp16-overflow",
        "restart",
        "lr-schedule",
    }
)
"""Kinds that are a set of events at single steps (``event_steps``), marked one by one even when
the finding spans the steps between them. Every other kind holds over its range (a divergence,
a stall, a drift) and is shaded over it; any one-step finding is a point."""
EVENT_KEYS = ("spike_steps", "blip_steps", "overflow_steps", "steps")
"""Evidence lists of individual event steps, in the order they are looked for."""
LEGEND_CHARS = 30
MAX_LANES = 6  # label rows in the findings strip
LANE_HEIGHT, TICK_HEIGHT = 0.19, 0.24  # inches: one label row; the event ticks under them
NICE = (1, 2, 2.5, 5, 10)  # tick steps a reader adds up in their head


@dataclass(frozen=True)
class Panel:
    """One row of the figure: which metrics it draws, how its y axis reads."""

    title: str
    ylabel: str
    metrics: tuple[tuple[str, str, str], ...]  # (metric, legend label, colour)
    log: bool = False
    base: int = 10  # log base (loss scales are powers of two)


# Fixed panels first (their order is the order a reader scans a run), then optional extras.
PANELS = (
    Panel(
        "Loss",
        "loss",
        ((TRAIN_LOSS, "train loss", LINE["train"]), (VAL_LOSS, "val loss", LINE["val"])),
    ),
    Panel(
        "Gradient norm",
        "global L2 norm (log)",
        ((GRAD_NORM, "grad norm", LINE["train"]),),
        log=True,
    ),
    Panel("Learning rate", "learning rate", ((LR, "lr", LINE["train"]),)),
    Panel(
        "Loss scale",
        "loss scale (log\u2082)",
        ((LOSS_SCALE, "loss scale", LINE["train"]),),
        log=True,
        base=2,
    ),
    Panel(
        "Max attention logit",
        "max |q·k| / √d",
        ((MAX_ATTN_LOGIT, "max attn logit", LINE["other"]),),
    ),
    Panel("Output log-Z", "mean log-sum-exp", ((OUTPUT_LOGZ, "output log-Z", LINE["other"]),)),
    Panel(
        "Update ratio",
        "‖Δθ‖ / ‖θ‖ (log)",
        ((UPDATE_RATIO, "update/param", LINE["other"]),),
        log=True,
    ),
    Panel("Parameter norm", "‖θ‖ (L2)", ((PARAM_NORM, "param norm", LINE["other"]),)),
)


# --- data helpers ------------------------------------------------------------------------------


def envelope(steps: np.ndarray, values: np.ndarray, width: int = AXES_PX) -> np.ndarray:
    """Indices to draw: the min and the max of each of ``width`` step columns (the pixel columns
    of the panel), in step order. A one-step spike is the max of its column, so it survives;
    what two points in one pixel column would draw identically is left out."""
    n = len(steps)
    if n <= 2 * width:
        return np.arange(n)
    lo, hi = float(steps[0]), float(steps[-1])
    col = np.minimum(((steps - lo) * (width / max(hi - lo, 1.0))).astype(np.int64), width - 1)
    first = np.flatnonzero(np.r_[True, col[1:] != col[:-1]])  # steps ascend: columns are runs
    imin = np.lexsort((values, col))[
        first
    ]  # sorted by column, then value: a column's first is its min
    imax = np.lexsort((-values, col))[first]
    return np.unique(np.concatenate([imin, imax]))


def decimate(
    steps: np.ndarray, values: np.ndarray, max_points: int = 2 * AXES_PX
) -> tuple[np.ndarray, np.ndarray]:
    """``steps, values`` thinned to at most ``max_points`` by the min/max envelope (finite values)."""
    idx = envelope(steps, values, max(1, max_points // 2))
    return steps[idx], values[idx]


def segment_ids(steps: np.ndarray, restarts: Sequence[int] = ()) -> np.ndarray:
    """A segment number per point: it grows where the curve must break, at a gap wider than
    GAP_FACTOR typical spacings (and than 0.5 % of the run) and at every restart step."""
    if len(steps) < 2:
        return np.zeros(len(steps), dtype=np.int64)
    d = np.diff(steps).astype(np.float64)
    typical = float(np.median(d))
    brk = d > max(GAP_FACTOR * typical, 0.005 * float(steps[-1] - steps[0]))
    for r in restarts:  # break between the last point before the resumed step and the first at it
        i = int(np.searchsorted(steps, r, side="left"))
        if 0 < i < len(steps):
            brk[i - 1] = True
    return np.r_[0, np.cumsum(brk)]


def broken_line(
    steps: np.ndarray, values: np.ndarray, restarts: Sequence[int] = (), width: int = AXES_PX
) -> tuple[np.ndarray, np.ndarray]:
    """The x, y to draw: the envelope of the points, with a NaN between segments (matplotlib
    leaves a NaN unjoined), so a gap or a restart is not bridged by a straight line."""
    seg = segment_ids(steps, restarts)
    idx = envelope(steps, values, width)
    x, y, s = steps[idx].astype(np.float64), values[idx], seg[idx]
    cut = np.flatnonzero(s[1:] != s[:-1]) + 1
    if len(cut):
        x, y = np.insert(x, cut, np.nan), np.insert(y, cut, np.nan)
    return x, y


def event_steps(f: Finding) -> list[int]:
    """The steps of a finding's individual events: every spike of a grad-spike finding, every
    blip of a folded loss-spike, every overflow, every non-finite step, a spike's peak; else its
    first step."""
    for key in EVENT_KEYS:
        v = f.evidence.get(key)
        if isinstance(v, list | tuple) and v:
            out = [int(x) for x in v if isinstance(x, int | float) and math.isfinite(x)]
            if out:
                return sorted(set(out))
    peak = f.evidence.get("peak_step")
    if isinstance(peak, int | float) and math.isfinite(peak):
        return [int(peak)]
    return [] if f.step_start is None else [int(f.step_start)]


def is_sustained(f: Finding) -> bool:
    """Shaded over its range (a divergence, a stall...), rather than marked at its events."""
    return (
        f.kind not in POINT_KINDS
        and f.step_start is not None
        and f.step_end is not None
        and f.step_end > f.step_start
    )


def label_of(f: Finding) -> str:
    """The name a finding is labelled with: a divergence of the validation loss while the
    training loss falls is overfitting, and says so."""
    return "overfitting" if f.kind == "divergence" and f.evidence.get("overfitting") else f.kind


def _get(run: RunData, metric: str) -> Series | None:
    s = run.series.get(metric)
    return s if s is not None and len(s) else None


def _restart_steps(run: RunData) -> list[int]:
    s = _get(run, RESTART)
    return [] if s is None else [int(x) for x in s.steps]


def _own_panel(name: str, s: Series) -> tuple[Panel, dict[str, Series]] | None:
    """A panel for a series without a known name, titled with its name, log-scaled when it spans
    orders of magnitude; None when it has nothing finite to draw."""
    ok = s.values[np.isfinite(s.values)]
    if not len(ok):
        return None
    title = name if len(name) <= 60 else name[:59] + "…"
    line = ((name, _short(name), LINE["other"]),)
    if ok.min() > 0 and re.search(
        r"loss.?scale", name, re.I
    ):  # a critic's or second model's scaler
        return Panel(title, "loss scale (log\u2082)", line, log=True, base=2), {name: s}
    log = bool(ok.min() > 0 and ok.max() / ok.min() > 1e3)
    return Panel(title, "value (log)" if log else "value", line, log=log), {name: s}


def _active_panels(
    run: RunData, findings: Sequence[Finding] = ()
) -> list[tuple[Panel, dict[str, Series]]]:
    """The known stability metrics the run logged, in reading order; then every other series a
    finding is about (an RL run's length or KL), so each finding's evidence is on the page. A run
    with none of these shows its own series (the first few, by name)."""
    out = []
    for p in PANELS:
        data = {m: s for m, _, _ in p.metrics if (s := _get(run, m)) is not None}
        if (
            p.metrics[0][0] == LOSS_SCALE
            and (sk := _get(run, SKIPPED_STEP)) is not None
            and np.nansum(sk.values) > 0
        ):
            data[SKIPPED_STEP] = sk
        if data:
            out.append((p, data))
    drawn = {m for _, d in out for m in d}
    named = [
        f.metric for f in findings if f.metric not in drawn and not f.metric.startswith("meta/")
    ]
    if not out:
        named += sorted(m for m in run.series if not is_canonical(m) and not m.startswith("meta/"))
    extra = 0
    for name in dict.fromkeys(named):
        s = _get(run, name)
        if s is not None and extra < MAX_UNKNOWN_PANELS and (p := _own_panel(name, s)) is not None:
            out.append(p)
            extra += 1
    return out


def _short(label: str) -> str:
    return label if len(label) <= LEGEND_CHARS else label[: LEGEND_CHARS - 1] + "…"


# --- axes ------------------------------------------------------------------------------------------


def _fmt_number(x: float, digits: int, style: str, positional: float = 1e4) -> str:
    """``x`` in ``digits`` significant digits: ``e`` style (``3e-4``) or ``g`` style, written out
    in full from 1 up to ``positional`` (``200``, not ``2e2``)."""
    if x == 0:
        return "0"
    if style == "e":
        mant, exp = f"{x:.{max(digits - 1, 0)}e}".split("e")
        if "." in mant:
            mant = mant.rstrip("0").rstrip(".")
        return f"{mant}e{int(exp)}"
    if 1 <= abs(x) < positional:
        digits = max(digits, int(math.floor(math.log10(abs(x)))) + 1)
    s = f"{x:.{digits}g}"
    if "e" in s:
        mant, exp = s.split("e")
        s = f"{mant}e{int(exp)}"
    return s


class DistinctFormatter(Formatter):
    """Tick labels with the fewest significant digits that still tell every tick apart: a
    nearly constant LR no longer prints ``3.0e-04`` at five ticks. ``style``: ``g``, ``e``, or
    ``lr`` (``e`` below 0.01, where learning rates are read as ``3e-4``, else ``g``)."""

    def __init__(self, style: str = "g", positional: float = 1e4) -> None:
        self.style, self.positional = style, positional
        self.digits, self.resolved = 3, "e" if style == "e" else "g"

    def set_locs(self, locs: Sequence[float]) -> None:
        super().set_locs(locs)
        lo, hi = self.axis.get_view_interval() if self.axis is not None else (-np.inf, np.inf)
        shown = [v for v in locs if min(lo, hi) <= v <= max(lo, hi)]
        if self.style == "lr":
            self.resolved = "e" if shown and max(abs(v) for v in shown) < 1e-2 else "g"
        # Exact as well as distinct: 1.25 must not read "1.2" because "1.2" and "1.5" differ.
        gaps = np.diff(sorted(shown))
        scale = (
            float(gaps[gaps > 0].min()) if (gaps > 0).any() else max(map(abs, shown), default=1.0)
        )
        for d in range(1, 13):
            labels = [_fmt_number(v, d, self.resolved, self.positional) for v in shown]
            exact = all(
                abs(float(t) - v) <= 1e-6 * scale for t, v in zip(labels, shown, strict=True)
            )
            if exact and len(set(labels)) == len(labels):
                self.digits = d
                break

    def __call__(self, x: float, pos: int | None = None) -> str:
        return _fmt_number(x, self.digits, self.resolved, self.positional)


class PowerFormatter(Formatter):
    """Loss scales read as powers of two: ``2^16``."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        if x <= 0:
            return ""
        k = math.log2(x)
        return f"2^{k:.0f}" if abs(k - round(k)) < 1e-9 else _fmt_number(x, 3, "g")


def log_ticks(lo: float, hi: float, base: int = 10, most: int = 7) -> list[float]:
    """At least two ticks inside ``[lo, hi]`` on a log axis: whole powers when the range spans
    several (thinned to ``most``), else 1-2-5 steps, else 1..9 steps, else plain linear steps
    (a series that moves by a few percent)."""
    k0, k1 = math.floor(math.log(lo, base)) - 1, math.ceil(math.log(hi, base)) + 1
    subs_choices = ((1,), (1, 2, 5), tuple(range(1, 10))) if base == 10 else ((1,),)
    for subs in subs_choices:
        ticks = [s * float(base) ** k for k in range(k0, k1 + 1) for s in subs]
        ticks = [t for t in ticks if lo <= t <= hi]
        if len(ticks) >= 2:
            if len(subs) == 1 and len(ticks) > most:
                step = math.ceil(len(ticks) / most)
                ticks = ticks[::step]
            return ticks
    return [t for t in MaxNLocator(4).tick_values(lo, hi) if lo <= t <= hi and t > 0]


def _limits(vals: np.ndarray, log: bool) -> tuple[float, float] | None:
    """The y range to show: the data with a margin; a constant series gets a symmetric band."""
    if not len(vals):
        return None
    lo, hi = float(vals.min()), float(vals.max())
    if log:
        if hi <= lo * (1 + 1e-9):
            return lo / 1.6, hi * 1.6
        pad = (math.log(hi) - math.log(lo)) * 0.06
        return lo * math.exp(-pad), hi * math.exp(pad)
    if hi - lo <= 1e-9 * max(abs(lo), abs(hi)):
        d = 0.1 * abs(lo) if lo else 1.0
        return lo - d, hi + d
    pad = (hi - lo) * 0.06
    return lo - pad, hi + pad


def _set_axis(ax, panel: Panel, vals: np.ndarray, *, log: bool) -> None:  # noqa: ANN001 - Axes
    """Fix the y range and ticks from the data drawn: no autoscale pass, labels that differ."""
    lim = _limits(vals, log)
    if log:
        ax.set_yscale("log", base=panel.base)
        if lim is not None:
            ax.set_ylim(*lim)
            ax.yaxis.set_major_locator(FixedLocator(log_ticks(*lim, base=panel.base)))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(
            PowerFormatter() if panel.base == 2 else DistinctFormatter("g")
        )
        return
    if lim is not None:
        ax.set_ylim(*lim)
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=NICE))
    ax.yaxis.set_major_formatter(DistinctFormatter("lr" if panel.metrics[0][0] == LR else "g"))


# --- drawing ---------------------------------------------------------------------------------------


def _drawable(s: Series, log: bool) -> np.ndarray:
    ok = np.isfinite(s.values) & (np.abs(s.values) <= PLOTTABLE)
    return ok & (s.values > 0) if log else ok


def _draw_series(
    ax,
    panel: Panel,
    data: dict[str, Series],
    restarts: Sequence[int],  # noqa: ANN001
    log: bool,
) -> np.ndarray:
    """Draw the panel's curves; returns the values drawn (for the y range)."""
    drawn = []
    for metric, label, color in panel.metrics:
        s = data.get(metric)
        if s is None:
            continue
        ok = _drawable(s, log)
        x, y = broken_line(s.steps[ok], s.values[ok], restarts)
        sparse = metric == VAL_LOSS or np.count_nonzero(ok) < 30
        style = {"marker": "o", "markersize": 3} if sparse else {}
        ax.plot(x, y, color=color, linewidth=1.1, label=_short(label), **style)
        drawn.append(s.values[ok])
        # NaN/Inf (and values beyond PLOTTABLE, or <= 0 on a log axis) cannot be drawn on the
        # axis: mark them on the top edge instead.
        bad = s.steps[~(np.isfinite(s.values) & (np.abs(s.values) <= PLOTTABLE))]
        if len(bad):
            ax.plot(
                bad,
                np.full(len(bad), 0.97),
                linestyle="none",
                marker="x",
                color="#D55E00",
                markersize=6,
                transform=ax.get_xaxis_transform(),
                clip_on=False,
                label=_short(f"{label}: NaN/Inf ({len(bad)})"),
            )
    sk = data.get(SKIPPED_STEP)
    if sk is not None:
        hit = sk.steps[np.nan_to_num(sk.values) > 0]
        ax.plot(
            hit,
            np.full(len(hit), 0.04),
            linestyle="none",
            marker="v",
            color="#D55E00",
            markersize=5,
            transform=ax.get_xaxis_transform(),
            label=f"skipped step ({len(hit)})",
        )
    return np.concatenate(drawn) if drawn else np.array([])


def _loss_is_log(data: dict[str, Series]) -> bool:
    """The loss goes on a log axis when a divergence or spike would flatten the rest to a line."""
    vals = np.concatenate([s.values[_drawable(s, False)] for s in data.values()] or [np.array([])])
    return bool(len(vals) and vals.min() > 0 and np.max(vals) / max(np.median(vals), 1e-12) > 8)


def _mark_events(
    ax,
    events: list[tuple[Finding, list[int]]],
    data: dict[str, Series],  # noqa: ANN001
    log: bool,
) -> None:
    """One ring per event on the curve it was found in, coloured by severity. Restarts are
    dashed lines already; an event whose value cannot be drawn has its tick in the strip."""
    for f, steps in events:
        if f.kind == "restart":
            continue
        s = data.get(f.metric)
        if s is None:
            s = next((v for k, v in data.items() if k != SKIPPED_STEP), None)
        if s is None or not steps:
            continue
        at = np.asarray(steps, dtype=np.int64)
        i = np.clip(np.searchsorted(s.steps, at), 0, len(s) - 1)
        y = s.values[i]
        hit = (
            (s.steps[i] == at)
            & np.isfinite(y)
            & (np.abs(y) <= PLOTTABLE)
            & ((y > 0) if log else True)
        )
        style = {
            "linestyle": "none",
            "marker": "o",
            "markerfacecolor": "none",
            "markersize": 7,
            "markeredgewidth": 1.4,
            "markeredgecolor": SEVERITY_COLOR[f.severity],
            "zorder": 3,
        }
        if hit.any():  # the others (NaN, off-scale) are already marked on the top edge
            ax.plot(at[hit], y[hit], **style)


@dataclass(frozen=True)
class _Label:
    text: str
    x: float
    severity: Severity


def _group_labels(items: Sequence[tuple[str, float, Severity]], width: float) -> list[_Label]:
    """One label per kind per cluster of events: ten overflows in a row read as ``fp16-overflow ×10``."""
    labels: list[_Label] = []
    by_kind: dict[str, list[tuple[float, Severity]]] = {}
    for kind, x, sev in items:
        by_kind.setdefault(kind, []).append((x, sev))
    for kind, pts in by_kind.items():
        pts.sort(key=lambda p: p[0])
        cluster: list[tuple[float, Severity]] = []
        for p in [*pts, (np.inf, Severity.INFO)]:
            if cluster and p[0] - cluster[-1][0] > width:
                n = len(cluster)
                x = float(np.mean([c[0] for c in cluster]))
                labels.append(
                    _Label(kind if n == 1 else f"{kind} ×{n}", x, max(c[1] for c in cluster))
                )
                cluster = []
            cluster.append(p)
    return sorted(labels, key=lambda lab: lab.x)


def _place_labels(
    fig: Figure, ax, labels: list[_Label], lanes: int
) -> tuple[list[tuple[Text, int]], int]:  # noqa: ANN001
    """Greedy lane assignment using real text extents: a label goes to the first lane it fits
    in. Only x extents matter, and they are final before the figure's height is (the width and
    the x range are fixed), so no draw is needed. Returns (text, lane) pairs and how many labels
    found no lane (removed)."""
    renderer = fig.canvas.get_renderer()
    ax_bb = ax.get_window_extent(renderer)
    lane_end: list[float] = [-np.inf] * lanes
    placed: list[tuple[Text, int]] = []
    dropped = 0
    pad = 4.0  # pixels between neighbouring labels
    for lab in labels:
        t = ax.text(
            lab.x,
            0,
            lab.text,
            ha="center",
            va="center",
            fontsize=8,
            parse_math=False,
            color="black",
            transform=ax.get_xaxis_transform(),
            bbox={
                "boxstyle": "round,pad=0.2",
                "fc": SEVERITY_COLOR[lab.severity],
                "ec": "none",
                "alpha": 0.35,
            },
        )
        bb = t.get_window_extent(renderer)
        shift = max(0.0, ax_bb.x0 - bb.x0) - max(0.0, bb.x1 - ax_bb.x1)
        if shift:
            # Keep labels near the edges inside the figure instead of cut off.
            t.set_ha("left" if shift > 0 else "right")
            bb = t.get_window_extent(renderer)
        lane = next((k for k in range(lanes) if bb.x0 >= lane_end[k] + pad), None)
        if lane is None:
            t.remove()
            dropped += 1
        else:
            lane_end[lane] = bb.x1
            placed.append((t, lane))
    return placed, dropped


def _vlines(ax: Axes, xs: Sequence[float], top: float, **style: object) -> None:
    """Vertical lines at steps ``xs`` from the axes' bottom to ``top`` (axes height = 1), as one
    collection. (``Axes.vlines`` also folds them into the data limits: here the y range is set
    or does not matter, and that pass was a tenth of building a figure.)"""
    segments = [((x, 0.0), (x, top)) for x in xs]
    ax.add_collection(
        LineCollection(segments, transform=ax.get_xaxis_transform(), **style), autolim=False
    )


def _panel_of(f: Finding, panels: list[tuple[Panel, dict[str, Series]]]) -> int | None:
    """The panel that draws a finding's metric (its events are marked there), if any."""
    return next((i for i, (_, d) in enumerate(panels) if f.metric in d), None)


class _Frame:
    """A figure whose axes are kept from one run to the next, for drawing many runs in a row.

    Creating an axes and its ticks costs about as much as drawing it, and every run of a report
    needs the same kinds of axes (a findings strip, then panels). A frame hands out the axes of
    its last figure again, emptied of what the last run drew and set back to a new axes' state,
    so a run drawn in a used frame gives the same image, byte for byte, as one drawn in a new
    figure (tests/render/test_plots.py checks it on every sample run). The figure is overwritten
    by the next run: only a caller that serialises it at once (``render_job``) may use one.
    """

    def __init__(self) -> None:
        self.fig = Figure(figsize=(FIG_WIDTH, 4.0), dpi=DPI)
        _Canvas(self.fig)
        self.pool: list[Axes] = []  # every axes made so far; a run takes them in order
        self.taken = 0

    def start(self) -> Figure:
        """The figure, emptied, with no axes attached. (Its height is the last run's until the
        run's own is known: nothing placed before then depends on it.)"""
        fig = self.fig
        for ax in list(fig.axes):
            fig.delaxes(ax)
        self.taken = 0
        return fig

    def axes(self, rect: tuple[float, float, float, float]) -> Axes:
        """The next axes at ``rect``: a used one set back to a new axes' state, else a new one."""
        if self.taken == len(self.pool):
            self.pool.append(self.fig.add_axes(rect))
        else:
            ax = self.pool[self.taken]
            _reset_axes(ax)
            self.fig.add_axes(ax)
            ax.set_position(rect)
        self.taken += 1
        return self.pool[self.taken - 1]


class _Canvas(FigureCanvasAgg):
    """An Agg canvas that keeps one renderer object when the figure's size changes.

    matplotlib caches the size of every text it lays out per renderer object, and a new size
    gets a new renderer: each run's figure (its own height) measured every tick label, title and
    legend entry again. Text sizes depend on the font and the dpi only, so the renderer is set
    up again at the new size in place, as matplotlib itself does when it unpickles one."""

    def get_renderer(self) -> RendererAgg:
        renderer = getattr(self, "renderer", None)
        key = (*self.get_width_height(physical=True), self.figure.dpi)
        if renderer is None or self._lastKey == key:
            return super().get_renderer()
        renderer.__init__(*key)  # a new pixel buffer; the same object and its text-size cache
        self._lastKey = key
        return renderer


def _reset_axes(ax: Axes) -> None:
    """Undo what ``_draw`` does to an axes, back to the state of ``Figure.add_axes``'s: every
    artist it added goes, scales, limits, autoscaling, the colour cycle and the axis labels are
    set back. (``Axes.clear`` would do it too, but it rebuilds the ticks: most of what a frame saves.)"""
    for artist in (*ax.lines, *ax.collections, *ax.patches, *ax.texts):
        artist.remove()
    if ax.legend_ is not None:
        ax.legend_.remove()
    if ax.get_yscale() != "linear":  # (x is always linear; its locators are always set)
        ax.set_yscale("linear")
    ax.dataLim.set_points(Bbox.null().get_points())
    ax.ignore_existing_data_limits = True
    ax.set_xlim(0, 1, auto=True)  # a new axes' limits: what an empty panel autoscales from
    ax.set_ylim(0, 1, auto=True)
    ax.set_prop_cycle(None)
    for label in (ax.xaxis.label, ax.yaxis.label):
        label.set_text("")
        label.set_fontsize(matplotlib.rcParams["axes.labelsize"])


_frames = threading.local()


def _frame() -> _Frame:
    """This thread's frame (a worker process has its own: a fork copies, never shares)."""
    if getattr(_frames, "frame", None) is None:
        _frames.frame = _Frame()
    return _frames.frame


def draw_run(run: RunData, findings: Iterable[Finding], *, title: str | None = None) -> Figure:
    """Draw one run: stacked panels on a shared step axis, sustained findings shaded, point
    events marked one by one, restarts as dashed lines, curves broken at gaps and restarts.
    The figure is the caller's own (a new one on every call)."""
    return _draw(run, findings, title, _Frame())


def _draw(run: RunData, findings: Iterable[Finding], title: str | None, frame: _Frame) -> Figure:
    """``draw_run`` into ``frame``'s figure (see ``_Frame``)."""
    with matplotlib.rc_context(TEXT_RC):  # labels are measured as they will be drawn
        return _draw_in(run, findings, title, frame)


def _draw_in(run: RunData, findings: Iterable[Finding], title: str | None, frame: _Frame) -> Figure:
    findings = [f for f in findings if f.run == run.name]
    panels = _active_panels(run, findings)
    restarts = _restart_steps(run)
    if not panels:
        fig = Figure(figsize=(FIG_WIDTH, 4.0), dpi=DPI)
        FigureCanvasAgg(fig)
        fig.set_size_inches(FIG_WIDTH, 1.5)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.text(
            0.5,
            0.5,
            f"{run.name}: no plottable metrics",
            ha="center",
            va="center",
            parse_math=False,
        )
        ax.set_axis_off()
        return fig
    fig = frame.start()
    all_steps = np.concatenate([s.steps for _, d in panels for s in d.values()])
    lo, hi = float(all_steps.min()), float(all_steps.max())
    pad = max((hi - lo) * 0.01, 0.5)
    x0, width = LEFT / FIG_WIDTH, (FIG_WIDTH - LEFT - RIGHT) / FIG_WIDTH

    # The strip first: its labels decide how many lanes (and so how much height) it needs.
    strip = frame.axes((x0, 0.5, width, 0.1))
    strip.set_xlim(lo - pad, hi + pad)
    bands = [f for f in findings if is_sustained(f)]
    events = [(f, event_steps(f)) for f in findings if not is_sustained(f)]
    items = [(label_of(f), (f.step_start + f.step_end) / 2, f.severity) for f in bands]
    items += [(label_of(f), float(s), f.severity) for f, steps in events for s in steps]
    placed, dropped = _place_labels(
        fig, strip, _group_labels(items, (hi - lo + 2 * pad) * 0.12), MAX_LANES
    )
    lanes = max((lane + 1 for _, lane in placed), default=0)
    strip_h = TICK_HEIGHT + LANE_HEIGHT * lanes if items else 0.22

    heights = [
        PANEL_HEIGHT["loss" if p.metrics[0][0] == TRAIN_LOSS else "other"] for p, _ in panels
    ]
    fig_h = TOP + strip_h + sum(heights) + GAP * len(heights) + BOTTOM
    fig.set_size_inches(FIG_WIDTH, fig_h)

    def rect(top_in: float, h: float) -> tuple[float, float, float, float]:
        return (x0, 1 - (top_in + h) / fig_h, width, h / fig_h)

    strip.set_position(rect(TOP, strip_h))
    for t, lane in placed:
        t.set_y(1 - (lane + 0.5) * LANE_HEIGHT / strip_h)
    body, y = [], TOP + strip_h + GAP
    for h in heights:
        body.append(frame.axes(rect(y, h)))  # not sharex: the strip keeps no x ticks
        y += h + GAP
    for ax in body:
        ax.set_xlim(lo - pad, hi + pad)

    for k, (ax, (panel, data)) in enumerate(zip(body, panels, strict=True)):
        log = panel.log or (panel.metrics[0][0] == TRAIN_LOSS and _loss_is_log(data))
        drawn = _draw_series(ax, panel, data, restarts, log)
        _mark_events(ax, [(f, s) for f, s in events if _panel_of(f, panels) == k], data, log)
        _set_axis(ax, panel, drawn, log=log)
        ax.set_ylabel(panel.ylabel + (" (log)" if log and not panel.log else ""), fontsize=9)
        ax.yaxis.set_label_coords(-(LEFT - 0.12) / (FIG_WIDTH - LEFT - RIGHT), 0.5)
        ax.tick_params(labelsize=8, labelbottom=ax is body[-1])
        ax.set_title(panel.title, fontsize=10, loc="left", pad=3, y=1.0, parse_math=False)
        ax.grid(True, which="major", alpha=0.25, linewidth=0.6)
        for f in bands:
            ax.axvspan(
                f.step_start,
                f.step_end,
                color=SEVERITY_COLOR[f.severity],
                alpha=SEVERITY_ALPHA[f.severity],
                linewidth=0,
                zorder=0,
            )
        for r in restarts:
            ax.axvline(r, color=RESTART_COLOR, linestyle="--", linewidth=1.0, zorder=1)
        handles, _ = ax.get_legend_handles_labels()
        if restarts and ax is body[0]:
            handles.append(Line2D([], [], color=RESTART_COLOR, linestyle="--", label="restart"))
        if len(handles) > 1 or len(panel.metrics) > 1:
            # A lone curve is named by its panel's title (a legend would only repeat it), unless
            # the panel may hold several (a loss panel with only the validation loss says so).
            # Outside the axes, so a legend never hides the end of a curve.
            ax.legend(
                handles=handles,
                fontsize=8,
                loc="upper left",
                bbox_to_anchor=(1.005, 1.0),
                frameon=False,
                borderaxespad=0.0,
            )
    body[-1].set_xlabel("step", fontsize=9)
    # Axis labels at fixed places: matplotlib would otherwise measure every tick label of the
    # figure to place each one (the y labels are placed in the panel loop).
    body[-1].xaxis.set_label_coords(0.5, -XLABEL_DROP / 72 / heights[-1])
    for ax in (strip, *body[:-1]):
        ax.xaxis.set_label_coords(0.5, 0.0)  # empty labels: nothing to place
    strip.yaxis.set_label_coords(0.0, 0.5)
    # Step ticks are labelled under the last panel only; the panels above get grid lines at the
    # same steps, one collection each instead of a row of tick artists (ticks cost most of a draw).
    xt = [
        x
        for x in MaxNLocator(nbins=8, steps=NICE, integer=True).tick_values(lo, hi)
        if lo - pad <= x <= hi + pad
    ]
    body[-1].xaxis.set_major_locator(FixedLocator(xt))
    for ax in body[:-1]:
        ax.xaxis.set_major_locator(NullLocator())
        _vlines(ax, xt, 1.0, colors="#b0b0b0", alpha=0.25, linewidths=0.6, zorder=0.5)
    body[-1].xaxis.set_major_formatter(DistinctFormatter("g", positional=1e7))

    # Findings strip: a band per sustained finding, a tick per event, labels in lanes above.
    strip.yaxis.set_major_locator(NullLocator())
    strip.xaxis.set_major_locator(NullLocator())
    for side in ("top", "right", "left"):
        strip.spines[side].set_visible(False)
    tick_top = 0.8 * TICK_HEIGHT / strip_h
    for f in bands:
        strip.axvspan(
            f.step_start,
            f.step_end,
            ymin=0,
            ymax=tick_top / 2,
            color=SEVERITY_COLOR[f.severity],
            alpha=0.8,
            linewidth=0,
        )
    for f, steps in events:
        if steps:
            _vlines(strip, steps, tick_top, colors=SEVERITY_COLOR[f.severity], linewidths=1.2)
    for r in restarts:
        strip.axvline(r, color=RESTART_COLOR, linestyle="--", linewidth=1.0)
    sevs = sorted({sev for _, _, sev in items}, reverse=True)
    handles = [Patch(color=SEVERITY_COLOR[s], alpha=0.6, label=s.label) for s in sevs]
    strip_title = "Findings" if items else "Findings: none"
    if dropped:
        strip_title += f" ({dropped} more label{'s' if dropped != 1 else ''} not shown)"
    strip.set_title(strip_title, fontsize=10, loc="left", pad=3, y=1.0)
    if handles:
        strip.legend(
            handles=handles,
            fontsize=8,
            loc="upper left",
            bbox_to_anchor=(1.005, 1.0),
            frameon=False,
            title="severity",
            title_fontsize=8,
            borderaxespad=0.0,
        )

    worst = max((f.severity for f in findings), default=None)
    verdict = f"{len(findings)} finding{'s' if len(findings) != 1 else ''}" + (
        f", worst: {worst.label}" if worst is not None else ""
    )
    # parse_math=False: a ``$`` in a run name must print as itself, not start mathtext.
    fig.suptitle(
        title or f"{run.name}  ·  {verdict}",
        fontsize=12,
        x=x0 / 2,
        y=1 - 0.12 / fig_h,
        ha="left",
        va="top",
        parse_math=False,
    )
    return fig


def plot_run(
    source: Report | MetricsTable | RunData,
    run: str,
    findings: Iterable[Finding],
    *,
    title: str | None = None,
) -> Figure:
    """Draw one run of a report (its series as ``diagnose`` cut them), of a table (cut here) or
    of a RunData."""
    data = source.run_data(run) if isinstance(source, Report | MetricsTable) else source
    return draw_run(
        data if data is not None else RunData(name=run, series={}), findings, title=title
    )


# --- output ----------------------------------------------------------------------------------------


def figure_bytes(fig: Figure, fmt: str = "png", dpi: int = DPI) -> bytes:
    """Serialise without timestamps or random ids so the same run gives the same bytes."""
    buf = io.BytesIO()
    meta = {"png": {"Software": None}, "svg": {"Date": None}}.get(fmt, {})
    with matplotlib.rc_context({**TEXT_RC, "svg.hashsalt": "stabdiag", "svg.fonttype": "none"}):
        if fmt == "png" and isinstance(fig.canvas, FigureCanvasAgg) and fig.dpi == dpi:
            _png(fig, buf)
        else:
            # zlib level 1: a fifth of the encode time of the default 6 for ~20% larger files.
            extra = {"pil_kwargs": {"compress_level": 1}} if fmt == "png" else {}
            fig.savefig(buf, format=fmt, dpi=dpi, metadata=meta, **extra)
    return buf.getvalue()


def _png(fig: Figure, buf: io.BytesIO) -> None:
    """``savefig(format="png")`` for a figure on an Agg canvas at its own dpi, as RGB when it is
    opaque (every stabdiag figure): a quarter less to filter and compress, the largest share of
    a figure's cost after drawing, for the same pixels. zlib level 1: a fifth of the encode time
    of the default 6 for ~20% larger files."""
    from PIL import Image

    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    image = Image.fromarray(rgba)
    if rgba[..., 3].min() == 255:
        image = image.convert("RGB")
    image.save(buf, format="png", compress_level=1, dpi=(fig.dpi, fig.dpi))


def safe_name(name: str) -> str:
    """A file name for a run name: separators and odd characters become ``_``."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "run"
    return s[:120]


def plot_files(report: Report) -> dict[str, str]:
    """Run name -> file stem, unique even when two runs slug to the same name."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for r in report.runs:
        stem, n = safe_name(r.name), 2
        base = stem
        while stem.lower() in used:
            stem, n = f"{base}-{n}", n + 1
        used.add(stem.lower())
        out[r.name] = stem
    return out


Progress = Callable[[int, int, str], None]
"""``progress(done, total, run)``: called after each run's figure is drawn (the CLI shows a bar)."""


@dataclass(frozen=True)
class PlotJob:
    """What a worker needs to draw one run: only the series drawn travel, not the whole table."""

    run: RunData
    findings: tuple[Finding, ...]
    formats: tuple[str, ...]


def _job(report: Report, run: str, formats: Sequence[str]) -> PlotJob:
    data = report.run_data(run) or RunData(name=run, series={})
    wanted = {m for p in PANELS for m, _, _ in p.metrics} | {SKIPPED_STEP, RESTART}
    series = {k: v for k, v in data.series.items() if k in wanted or not is_canonical(k)}
    return PlotJob(RunData(name=run, series=series), tuple(report.findings_of(run)), tuple(formats))


def render_job(job: PlotJob) -> dict[str, bytes]:
    """One run's figure in each format (runs in a worker process; only bytes come back)."""
    fig = _draw(job.run, job.findings, None, _frame())
    return {fmt: figure_bytes(fig, fmt) for fmt in job.formats}


def render_runs(
    report: Report,
    formats: Sequence[str] = ("png",),
    *,
    jobs: int = 1,
    progress: Progress | None = None,
) -> dict[str, dict[str, bytes]]:
    """Run name -> format -> image bytes, for every run of the report, in report order.

    ``jobs`` > 1 draws the first run here and the others in up to that many worker processes
    (the figures' bytes come back); ``progress`` is called as each run is done. Never prints."""
    names = [r.name for r in report.runs]
    total = len(names)
    out: dict[str, dict[str, bytes]] = {}
    if jobs > 1 and total > 2:  # (of two runs, a worker would draw the second no sooner)
        from concurrent.futures import as_completed

        from stabdiag.diagnose import _LazyPool

        # The first run is drawn here: the workers, forked after it, start from this process's
        # frame with its axes, ticks and fonts already made instead of each making its own.
        out[names[0]] = render_job(_job(report, names[0], formats))
        if progress is not None:
            progress(1, total, names[0])
        with _LazyPool(min(jobs, total - 1)) as pool:
            futures = {pool.submit(render_job, _job(report, n, formats)): n for n in names[1:]}
            for done, fut in enumerate(as_completed(futures), start=2):
                out[futures[fut]] = fut.result()
                if progress is not None:
                    progress(done, total, futures[fut])
        return {n: out[n] for n in names}
    for done, n in enumerate(names, start=1):
        out[n] = render_job(_job(report, n, formats))
        if progress is not None:
            progress(done, total, n)
    return out


def image_files(
    report: Report,
    formats: Sequence[str] = ("png", "svg"),
    *,
    jobs: int = 1,
    progress: Progress | None = None,
) -> dict[str, bytes]:
    """One figure per run in each format, as file name (``<run stem>.<fmt>``) -> bytes, run by
    run; empty when the report has no series. Writes nothing: the caller chooses where."""
    if not report.runs or (report.table is None and not report.series):
        return {}
    images = render_runs(report, formats, jobs=jobs, progress=progress)
    return {
        f"{stem}.{fmt}": images[run][fmt]
        for run, stem in plot_files(report).items()
        for fmt in formats
    }


def run_images(images: Mapping[str, Mapping[str, bytes]], fmt: str = "png") -> dict[str, bytes]:
    """Run name -> that format's bytes, from ``render_runs``' result."""
    return {run: by_fmt[fmt] for run, by_fmt in images.items() if fmt in by_fmt}
