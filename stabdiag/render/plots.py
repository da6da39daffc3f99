"""Plots: one figure per run with every stability metric on a shared step axis.

People find trouble faster by looking than by reading, so each figure puts the loss, grad norm,
LR, loss scale and any other stability metric the run logged one above the other, shades every
finding over its step range (coloured by severity, labelled with its kind in a lane strip above
the panels so labels never overlap) and marks restarts as vertical lines.

Figures are built with ``matplotlib.figure.Figure`` directly, never through ``pyplot``: no global
state leaks between calls and nothing needs closing in a long-running process beyond dropping the
reference. Rendering uses the Agg (PNG) and SVG backends only.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from stabdiag.atomic import write_atomic
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
    Series,
)

# Colour-blind-safe severity colours (Okabe-Ito): red-ish vermillion, orange, blue.
SEVERITY_COLOR = {Severity.ERROR: "#D55E00", Severity.WARNING: "#E69F00", Severity.INFO: "#0072B2"}
SEVERITY_ALPHA = {Severity.ERROR: 0.22, Severity.WARNING: 0.18, Severity.INFO: 0.10}
LINE = {"train": "#1f3b73", "val": "#CC79A7", "other": "#009E73"}
RESTART_COLOR = "#555555"
MAX_POINTS = 4000  # per series; min/max decimation keeps every spike visible


@dataclass(frozen=True)
class Panel:
    """One row of the figure: which metrics it draws, how its y axis reads."""

    title: str
    ylabel: str
    metrics: tuple[tuple[str, str, str], ...]  # (metric, legend label, colour)
    log: bool = False


# Fixed panels first (their order is the order a reader scans a run), then optional extras.
PANELS = (
    Panel("Loss", "loss", ((TRAIN_LOSS, "train loss", LINE["train"]),
                                         (VAL_LOSS, "val loss", LINE["val"]))),
    Panel("Gradient norm", "global L2 norm (log)", ((GRAD_NORM, "grad norm", LINE["train"]),), log=True),
    Panel("Learning rate", "learning rate", ((LR, "lr", LINE["train"]),)),
    Panel("Loss scale", "loss scale (log)", ((LOSS_SCALE, "loss scale", LINE["train"]),), log=True),
    Panel("Max attention logit", "max |q·k| / √d", ((MAX_ATTN_LOGIT, "max attn logit", LINE["other"]),)),
    Panel("Output log-Z", "mean log-sum-exp", ((OUTPUT_LOGZ, "output log-Z", LINE["other"]),)),
    Panel("Update ratio", "‖Δθ‖ / ‖θ‖ (log)", ((UPDATE_RATIO, "update/param", LINE["other"]),), log=True),
    Panel("Parameter norm", "‖θ‖ (L2)", ((PARAM_NORM, "param norm", LINE["other"]),)),
)


# --- data helpers ------------------------------------------------------------------------------


PLOTTABLE = 1e100  # larger magnitudes are marked, not drawn (see _draw_series)

def decimate(steps: np.ndarray, values: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Keep the min and max of each bucket so a one-step spike survives thinning (SVG size)."""
    n = len(steps)
    if n <= max_points:
        return steps, values
    buckets = max_points // 2
    edges = np.linspace(0, n, buckets + 1).astype(int)
    keep: list[int] = []
    finite = np.where(np.isfinite(values), values, np.nan)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        if hi <= lo:
            continue
        chunk = finite[lo:hi]
        if np.all(np.isnan(chunk)):
            keep.append(lo)
            continue
        a, b = lo + int(np.nanargmin(chunk)), lo + int(np.nanargmax(chunk))
        keep.extend(sorted({a, b}))
    idx = np.asarray(keep)
    return steps[idx], values[idx]


def _series(table: MetricsTable, run: str, metric: str) -> Series | None:
    if metric not in table.metrics(run):
        return None
    s = table.series(run, metric)
    return s if len(s) else None


def _restart_steps(table: MetricsTable, run: str) -> list[int]:
    s = _series(table, run, RESTART)
    return [] if s is None else [int(x) for x in s.steps]


def _active_panels(table: MetricsTable, run: str) -> list[tuple[Panel, dict[str, Series]]]:
    present = set(table.metrics(run))
    out = []
    for p in PANELS:
        data = {m: s for m, _, _ in p.metrics if m in present and (s := _series(table, run, m)) is not None}
        if p.metrics[0][0] == LOSS_SCALE and SKIPPED_STEP in present:
            sk = _series(table, run, SKIPPED_STEP)
            if sk is not None and np.nansum(sk.values) > 0:
                data[SKIPPED_STEP] = sk
        if data:
            out.append((p, data))
    return out


# --- drawing -----------------------------------------------------------------------------------


def _span(f: Finding, lo: float, hi: float) -> tuple[float, float] | None:
    """The x range to shade; a one-step finding is widened so it stays visible at any zoom."""
    if f.step_start is None:
        return None
    a = float(f.step_start)
    b = float(f.step_end if f.step_end is not None else f.step_start)
    min_w = max((hi - lo) * 0.004, 0.5)
    if b - a < min_w:
        mid = (a + b) / 2
        a, b = mid - min_w / 2, mid + min_w / 2
    return a, b


def _draw_series(ax, panel: Panel, data: dict[str, Series]) -> None:  # noqa: ANN001 - matplotlib Axes
    for metric, label, color in panel.metrics:
        s = data.get(metric)
        if s is None:
            continue
        # Beyond PLOTTABLE matplotlib's axis arithmetic overflows (a 1e308 logit broke every
        # figure): such values are drawn like NaN/Inf, as marks on the top edge.
        drawable = np.isfinite(s.values) & (np.abs(s.values) <= PLOTTABLE)
        ok = drawable.copy()
        if panel.log:
            ok &= s.values > 0
        x, y = decimate(s.steps[ok], s.values[ok])
        style = {"marker": "o", "markersize": 3} if metric == VAL_LOSS or len(x) < 30 else {}
        ax.plot(x, y, color=color, linewidth=1.1, label=label, **style)
        bad = s.steps[~drawable]
        if len(bad):
            # NaN/Inf cannot be drawn on the axis: mark them on the top edge instead.
            ax.plot(bad, np.full(len(bad), 0.97), linestyle="none", marker="x", color="#D55E00",
                    markersize=6, transform=ax.get_xaxis_transform(), clip_on=False,
                    label=f"{label}: NaN/Inf/off-scale ({len(bad)})")
    sk = data.get(SKIPPED_STEP)
    if sk is not None:
        hit = sk.steps[np.nan_to_num(sk.values) > 0]
        ax.plot(hit, np.full(len(hit), 0.04), linestyle="none", marker="v", color="#D55E00",
                markersize=5, transform=ax.get_xaxis_transform(), label=f"skipped step ({len(hit)})")
    if panel.metrics[0][0] == LOSS_SCALE:
        # Loss scales are powers of two: label them 2^k, one tick per few octaves.
        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_locator(LogLocator(base=2, numticks=6))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"2^{np.log2(v):.0f}" if v > 0 else ""))
        ax.yaxis.set_minor_formatter(NullFormatter())
    elif panel.log:
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_locator(LogLocator(numticks=6))
    elif panel.metrics[0][0] == LR:
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: "0" if v == 0 else f"{v:.1e}"))


def _loss_axis(ax, data: dict[str, Series]) -> None:  # noqa: ANN001
    """Switch the loss to log scale when a divergence or spike would flatten the rest to a line."""
    vals = np.concatenate([s.values[np.isfinite(s.values) & (np.abs(s.values) <= PLOTTABLE)]
                           for s in data.values()] or [np.array([])])
    if len(vals) and vals.min() > 0 and np.max(vals) / max(np.median(vals), 1e-12) > 8:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylabel(ax.get_ylabel() + " (log)")


@dataclass(frozen=True)
class _Label:
    text: str
    x: float
    severity: Severity


def _group_labels(findings: Sequence[Finding], spans: dict[int, tuple[float, float]],
                  width: float) -> list[_Label]:
    """One label per kind per cluster: ten overflow skips in a row read as ``fp16-overflow ×10``."""
    labels: list[_Label] = []
    by_kind: dict[str, list[tuple[float, float, Severity]]] = {}
    for i, f in enumerate(findings):
        if i in spans:
            a, b = spans[i]
            by_kind.setdefault(f.kind, []).append(((a + b) / 2, b, f.severity))
    for kind, items in by_kind.items():
        items.sort()
        cluster: list[tuple[float, float, Severity]] = []
        for it in items + [(np.inf, np.inf, Severity.INFO)]:
            if cluster and it[0] - cluster[-1][0] > width:
                n = len(cluster)
                x = float(np.mean([c[0] for c in cluster]))
                sev = max(c[2] for c in cluster)
                labels.append(_Label(kind if n == 1 else f"{kind} ×{n}", x, sev))
                cluster = []
            cluster.append(it)
    return sorted(labels, key=lambda lab: lab.x)


def _place_labels(fig: Figure, ax, labels: list[_Label], lanes: int) -> int:  # noqa: ANN001
    """Greedy lane assignment using real text extents: a label goes to the first lane it fits in."""
    renderer = FigureCanvasAgg(fig).get_renderer() if fig.canvas is None else fig.canvas.get_renderer()
    lane_end: list[float] = [-np.inf] * lanes
    dropped = 0
    pad = 4.0  # pixels between neighbouring labels
    for lab in labels:
        t = ax.text(lab.x, 0, lab.text, ha="center", va="center", fontsize=8, parse_math=False,
                    color="black", transform=ax.get_xaxis_transform(),
                    bbox={"boxstyle": "round,pad=0.2", "fc": SEVERITY_COLOR[lab.severity],
                          "ec": "none", "alpha": 0.35})
        bb = t.get_window_extent(renderer)
        x0, x1 = bb.x0, bb.x1
        ax_bb = ax.get_window_extent(renderer)
        shift = max(0.0, ax_bb.x0 - x0) - max(0.0, x1 - ax_bb.x1)
        if shift:
            # Keep labels near the edges inside the figure instead of cut off.
            t.set_ha("left" if shift > 0 else "right")
            t.set_x(lab.x)
            bb = t.get_window_extent(renderer)
            x0, x1 = bb.x0, bb.x1
        for lane in range(lanes):
            if x0 >= lane_end[lane] + pad:
                lane_end[lane] = x1
                t.set_y(1 - (lane + 0.5) / lanes)
                break
        else:
            t.remove()
            dropped += 1
    return dropped


def plot_run(table: MetricsTable, run: str, findings: Iterable[Finding], *,
             title: str | None = None) -> Figure:
    """Draw one run: stacked panels on a shared step axis, findings shaded, restarts marked."""
    findings = [f for f in findings if f.run == run]
    panels = _active_panels(table, run)
    restarts = _restart_steps(table, run)
    lanes = 3
    has_spans = any(f.step_start is not None for f in findings)
    heights = [0.55 if has_spans else 0.15] + [1.6 if p.metrics[0][0] == TRAIN_LOSS else 1.15 for p, _ in panels]
    fig = Figure(figsize=(11, 0.9 + sum(heights) * 1.25), layout="constrained")
    FigureCanvasAgg(fig)
    if not panels:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, f"{run}: no plottable metrics", ha="center", va="center", parse_math=False)
        ax.set_axis_off()
        return fig
    axes = fig.subplots(len(heights), 1, sharex=True, gridspec_kw={"height_ratios": heights})
    strip, body = axes[0], list(axes[1:])

    all_steps = np.concatenate([s.steps for _, d in panels for s in d.values()])
    lo, hi = float(all_steps.min()), float(all_steps.max())
    pad = max((hi - lo) * 0.01, 0.5)
    strip.set_xlim(lo - pad, hi + pad)

    spans = {i: sp for i, f in enumerate(findings) if (sp := _span(f, lo, hi)) is not None}
    for ax, (panel, data) in zip(body, panels, strict=True):
        _draw_series(ax, panel, data)
        if panel.metrics[0][0] == TRAIN_LOSS:
            _loss_axis(ax, data)
        ax.set_ylabel(panel.ylabel, fontsize=9)
        ax.set_title(panel.title, fontsize=10, loc="left", pad=3)
        ax.grid(True, which="major", alpha=0.25, linewidth=0.6)
        for i, (a, b) in spans.items():
            sev = findings[i].severity
            ax.axvspan(a, b, color=SEVERITY_COLOR[sev], alpha=SEVERITY_ALPHA[sev], linewidth=0, zorder=0)
        for r in restarts:
            ax.axvline(r, color=RESTART_COLOR, linestyle="--", linewidth=1.0, zorder=1)
        handles, _ = ax.get_legend_handles_labels()
        if restarts and ax is body[0]:
            handles.append(Line2D([], [], color=RESTART_COLOR, linestyle="--", label="restart"))
        if handles:
            # Outside the axes, so a legend never hides the end of a curve.
            ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.005, 1.0),
                      frameon=False, borderaxespad=0.0)
    body[-1].set_xlabel("step")

    # Event strip: labels in non-overlapping lanes, severity legend on the right.
    strip.set_yticks([])
    strip.tick_params(axis="x", labelbottom=False, length=0)
    for side in ("top", "right", "left"):
        strip.spines[side].set_visible(False)
    for i, (a, b) in spans.items():
        sev = findings[i].severity
        strip.axvspan(a, b, ymin=0, ymax=0.08, color=SEVERITY_COLOR[sev], alpha=0.8, linewidth=0)
    for r in restarts:
        strip.axvline(r, color=RESTART_COLOR, linestyle="--", linewidth=1.0)
    width_steps = (hi - lo + 2 * pad) * 0.12
    labels = _group_labels(findings, spans, width_steps)
    fig.canvas.draw()  # lay out first so text extents are final
    dropped = _place_labels(fig, strip, labels, lanes)
    sevs = sorted({f.severity for i, f in enumerate(findings) if i in spans}, reverse=True)
    handles = [Patch(color=SEVERITY_COLOR[s], alpha=0.6, label=s.label) for s in sevs]
    strip_title = "Findings" if spans else "Findings: none"
    if dropped:
        strip_title += f" ({dropped} more labels not shown)"
    strip.set_title(strip_title, fontsize=10, loc="left", pad=3)
    if handles:
        strip.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.15),
                     frameon=False, title="severity", title_fontsize=8)

    worst = max((f.severity for f in findings), default=None)
    verdict = f"{len(findings)} finding{'s' if len(findings) != 1 else ''}" + (
        f", worst: {worst.label}" if worst is not None else "")
    # parse_math=False: a ``$`` in a run name must print as itself, not start mathtext.
    fig.suptitle(title or f"{run}  ·  {verdict}", fontsize=12, x=0.01, ha="left", parse_math=False)
    return fig


# --- output ------------------------------------------------------------------------------------


def figure_bytes(fig: Figure, fmt: str = "png", dpi: int = 110) -> bytes:
    """Serialise without timestamps or random ids so the same run gives the same bytes."""
    buf = io.BytesIO()
    meta = {"png": {"Software": None}, "svg": {"Date": None}}.get(fmt, {})
    with matplotlib.rc_context({"svg.hashsalt": "stabdiag", "svg.fonttype": "none"}):
        fig.savefig(buf, format=fmt, dpi=dpi, metadata=meta)
    return buf.getvalue()


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


def save_plots(report: Report, out_dir: str | Path,
               formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Write one figure per run in each format; returns the paths written, run by run."""
    if report.table is None:
        return []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for run, stem in plot_files(report).items():
        fig = plot_run(report.table, run, report.findings_of(run))
        try:
            for fmt in formats:
                p = out / f"{stem}.{fmt}"
                write_atomic(p, figure_bytes(fig, fmt))
                written.append(p)
        finally:
            fig.clear()
    return written
