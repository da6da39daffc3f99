"""Renderers for sweep results: terminal table, JSON, Markdown and the LR-sensitivity figure.

The figure is the paper's (Wortsman et al. 2023, Fig. 1): final loss against learning rate on a
log axis, one line per stabilizer setting, so a setting that "trains to low loss at high LR" is
visibly flat; the panel under it shows the max attention logit, the mechanism QK-norm acts on.
Unstable cells get a ring coloured by severity and a short label of their finding kinds. With
several seeds each point is the mean over seeds, with a min-max band and error bars: a gap
between two settings that the bands cover is noise, and the reader can see it.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from stabdiag import words
from stabdiag.console import SEVERITY_STYLE
from stabdiag.findings import Severity
from stabdiag.render.json import strict_json
from stabdiag.render.markdown import ICON, md
from stabdiag.render.plots import SEVERITY_COLOR, figure_bytes
from stabdiag.sweep.results import (
    DEFINITIONS,
    Comparison,
    PointSummary,
    SettingSummary,
    Spread,
    SweepResult,
)
from stabdiag.textfmt import EN_DASH, num

# Okabe-Ito, colour-blind safe; settings cycle through it.
SETTING_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
SHORT_KIND = {
    "attention-logit-growth": "attn",
    "output-logit-drift": "logZ",
    "loss-spike": "spike",
    "grad-spike": "gspike",
    "grad-explosion": "gexpl",
    "nonfinite": "NaN",
    "fp16-overflow": "fp16",
    "divergence": "div",
    "stall": "stall",
    "restart": "restart",
    "lr-schedule": "lr",
    "rank-divergence": "rank",
}


_val = functools.partial(num, nonfinite=EN_DASH)
"""A number of the sweep tables: NaN/Inf is a failed or diverged cell and reads as a dash."""


def _worst_point(p: PointSummary) -> str | None:
    return p.findings[0][1] if p.findings else None


def _kinds(p: PointSummary, seeds: int) -> str:
    if seeds <= 1:
        return ", ".join(f"{k} ({sev})" for k, sev, _ in p.findings) or "–"
    return ", ".join(f"{k} ({sev}, {n}/{p.seeds})" for k, sev, n in p.findings) or "–"


def _spread(x: Spread, fmt: str = ".3f") -> str:
    """`2.345` for one seed, `2.345 ± 0.021` for several."""
    if x.n <= 1:
        return _val(x.mean, fmt)
    return f"{_val(x.mean, fmt)} ± {_val(x.std, fmt)}"


def _range(x: Spread, fmt: str = ".3f") -> str:
    return "–" if x.n <= 1 else f"{_val(x.lo, fmt)}–{_val(x.hi, fmt)}"


def _final(p: PointSummary) -> str:
    if not p.seeds:
        return "failed"
    if p.diverged == p.seeds:
        return "diverged"
    text = _spread(p.final_loss)
    return f"{text} ({p.diverged}/{p.seeds} diverged)" if p.diverged else text


def _interval(s: SettingSummary) -> str:
    n = len(s.seed_sensitivities)
    if n <= 1:
        return f"– ({words.count(n, 'seed')})"
    return f"{_val(s.sensitivity_lo, '.3f')}–{_val(s.sensitivity_hi, '.3f')} ({n} seeds)"


def _best(s: SettingSummary, seeds: int) -> str:
    if seeds <= 1 or not math.isfinite(s.best_final_lo):
        return _val(s.best_final_loss, ".3f")
    return f"{_val(s.best_final_loss, '.3f')} ({_val(s.best_final_lo, '.3f')}–{_val(s.best_final_hi, '.3f')})"


def comparison_line(c: Comparison) -> str:
    paired = (
        f"; lower on {c.paired_wins} of {c.paired_seeds} paired seeds" if c.paired_seeds > 1 else ""
    )
    return (
        f"{c.lower} vs {c.higher}: LR sensitivity lower by {_val(c.difference, '.3f')}, "
        f"{c.verdict}{paired}"
    )


def _head(result: SweepResult) -> str:
    n = len(result.seeds)
    return (
        f"stabdiag sweep · preset {result.preset}, recipe {result.recipe or '-'} · "
        f"{words.count(len(result.settings), 'setting')} × {words.count(len(result.lrs), 'LR')} × {words.count(n, 'seed')}"
        f" on {result.device} ({result.backend}) · {result.wall_s:.0f} s"
    )


# --- terminal -------------------------------------------------------------------------------


def render_sweep_text(result: SweepResult) -> RenderableType:
    seeds = len(result.seeds)
    head = Text(_head(result), style="bold")
    summary = Table(box=None, pad_edge=False, header_style="bold", title_justify="left")
    for col, just in (
        ("setting", "left"),
        ("LR sensitivity", "right"),
        ("over seeds", "right"),
        ("best final loss", "right"),
        ("at LR", "right"),
        ("unstable cells", "right"),
    ):
        summary.add_column(col, justify=just)  # type: ignore[arg-type]
    for s in result.settings:
        summary.add_row(
            s.name,
            _val(s.lr_sensitivity, ".3f"),
            _interval(s),
            _best(s, seeds),
            _val(s.best_lr),
            f"{s.unstable_cells}/{len(result.cells_of(s.name))}"
            + (f" ({s.failed_cells} failed)" if s.failed_cells else ""),
        )
    points = Table(box=None, pad_edge=False, header_style="bold")
    cols = [
        "setting",
        "LR",
        "final",
        *(["min–max"] if seeds > 1 else []),
        "best",
        "initial",
        "max attn",
        "logZ drift",
    ]
    for col in cols:
        points.add_column(col, justify="left" if col == "setting" else "right", no_wrap=True)
    points.add_column("findings", overflow="fold")
    for s in result.settings:
        for p in result.points_of(s.name):
            worst = _worst_point(p)
            row: list[RenderableType] = [
                p.setting,
                _val(p.lr),
                Text(_final(p), style="error" if p.diverged or not p.seeds else ""),
            ]
            if seeds > 1:
                row.append(_range(p.final_loss))
            row += [
                _spread(p.best_loss),
                _val(p.initial_loss, ".3f"),
                _spread(p.max_attn_logit, ".3g"),
                _val(p.logz_drift, "+.2f"),
                Text(_kinds(p, seeds), style=SEVERITY_STYLE.get(worst or "", "dim")),
            ]
            points.add_row(*row)
    parts: list[RenderableType] = [head, Text(""), summary]
    if result.comparisons:
        parts += [Text("")] + [Text(comparison_line(c)) for c in result.comparisons]
    parts += [Text(""), points]
    if result.failed:
        parts += [
            Text(""),
            Text(f"failed cells ({len(result.failed)}; re-run to retry):", style="error"),
        ]
        parts += [
            Text(f"  {c.setting} lr={_val(c.lr)} seed {c.seed}: {c.error}") for c in result.failed
        ]
    notes = [
        f"final loss: {DEFINITIONS['final_loss']}",
        f"LR sensitivity: {DEFINITIONS['lr_sensitivity']}",
    ]
    if seeds > 1:
        notes += [
            f"spread: {DEFINITIONS['spread']}",
            f"over seeds: {DEFINITIONS['lr_sensitivity_interval']}",
        ]
    parts += [Text(""), Text("\n".join(notes), style="dim")]
    if result.plots:
        parts.append(Text("plots: " + ", ".join(result.plots), style="dim"))
    return Group(*parts)


# --- JSON / Markdown ------------------------------------------------------------------------


def render_sweep_json(result: SweepResult) -> str:
    return strict_json(result.to_dict())


def render_sweep_markdown(result: SweepResult, *, image: str | None = None) -> str:
    """GitHub-flavoured Markdown; setting names come from the user and go through `md`."""
    seeds = len(result.seeds)
    lines = [
        f"## {md(_head(result))}",
        "",
        "| setting | LR sensitivity | over seeds | best final loss | at LR | unstable cells |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in result.settings:
        failed = f" ({s.failed_cells} failed)" if s.failed_cells else ""
        lines.append(
            f"| {md(s.name)} | {_val(s.lr_sensitivity, '.3f')} | {_interval(s)} "
            f"| {_best(s, seeds)} | {_val(s.best_lr)} "
            f"| {s.unstable_cells}/{len(result.cells_of(s.name))}{failed} |"
        )
    if result.comparisons:
        lines += [""] + [f"- {md(comparison_line(c))}" for c in result.comparisons]
    rng = " min–max |" if seeds > 1 else ""
    lines += [
        "",
        f"| | setting | LR | final loss |{rng} best | initial | max attn logit "
        "| logZ drift | findings |",
        "|---|---|---:|---:|" + ("---:|" if seeds > 1 else "") + "---:|---:|---:|---:|---|",
    ]
    for s in result.settings:
        for p in result.points_of(s.name):
            icon = "💥" if p.diverged else "❌" if not p.seeds else ICON[_worst_point(p)]
            kinds = md(_kinds(p, seeds))
            mid = f" {_range(p.final_loss)} |" if seeds > 1 else ""
            lines.append(
                f"| {icon} | {md(p.setting)} | {_val(p.lr)} | {_final(p)} |{mid} "
                f"{_spread(p.best_loss)} | {_val(p.initial_loss, '.3f')} "
                f"| {_spread(p.max_attn_logit, '.3g')} | {_val(p.logz_drift, '+.2f')} "
                f"| {kinds} |"
            )
    if result.failed:
        lines += ["", f"**Failed cells** ({len(result.failed)}; a re-run retries them):", ""]
        lines += [
            f"- {md(c.setting)} lr={_val(c.lr)} seed {c.seed}: {md(c.error)}" for c in result.failed
        ]
    lines += [
        "",
        f"- **final loss**: {md(DEFINITIONS['final_loss'])}",
        f"- **LR sensitivity**: {md(DEFINITIONS['lr_sensitivity'])}",
    ]
    if seeds > 1:
        lines += [
            f"- **spread**: {md(DEFINITIONS['spread'])}",
            f"- **over seeds**: {md(DEFINITIONS['lr_sensitivity_interval'])}",
        ]
    lines.append("")
    if image:
        url = image.replace(" ", "%20").replace(")", "%29").replace("(", "%28")
        lines += [f"![final loss vs learning rate]({url})", ""]
    return "\n".join(lines)


# --- figure ---------------------------------------------------------------------------------


def _short(p: PointSummary, seeds: int) -> str:
    kinds = [
        SHORT_KIND.get(k, k) + (f" {n}/{p.seeds}" if seeds > 1 else "")
        for k, sev, n in p.findings
        if sev in ("warning", "error")
    ]
    if p.diverged and not any(k.startswith("NaN") for k in kinds):
        kinds.insert(0, "NaN" + (f" {p.diverged}/{p.seeds}" if seeds > 1 else ""))
    return ",".join(kinds)


def _band(ax: Any, x: np.ndarray, spreads: list[Spread], color: str) -> None:
    """Seed spread: a shaded min-max band plus min-max error bars at each LR."""
    lo = np.array([sp.lo for sp in spreads])
    hi = np.array([sp.hi for sp in spreads])
    mean = np.array([sp.mean for sp in spreads])
    ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(mean)
    if ok.sum() == 0:
        return
    ax.fill_between(x[ok], lo[ok], hi[ok], color=color, alpha=0.15, lw=0, zorder=2)
    ax.errorbar(
        x[ok],
        mean[ok],
        yerr=[mean[ok] - lo[ok], hi[ok] - mean[ok]],
        fmt="none",
        ecolor=color,
        elinewidth=1.2,
        capsize=3,
        zorder=3,
    )


def plot_sweep(result: SweepResult) -> Figure:
    fig = Figure(figsize=(8.5, 7.2), layout="constrained")
    ax_loss, ax_attn = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    l0s = [p.initial_loss for p in result.points if math.isfinite(p.initial_loss)]
    used: set[str] = set()
    n = len(result.settings)
    seeds = len(result.seeds)
    for si, s in enumerate(result.settings):
        color = SETTING_COLORS[si % len(SETTING_COLORS)]
        ps = [p for p in result.points_of(s.name) if p.seeds]
        x = np.array([p.lr for p in ps])
        y = np.array([p.capped_final.mean for p in ps])
        if math.isfinite(s.lr_sensitivity):
            sens = f"LR sensitivity {s.lr_sensitivity:.3f}"
            if len(s.seed_sensitivities) > 1:
                sens += f" [{s.sensitivity_lo:.3f}–{s.sensitivity_hi:.3f}]"
        else:
            sens = "no finite cell"
        ax_loss.plot(x, y, "-o", color=color, lw=1.8, ms=5, label=f"{s.name}  ({sens})", zorder=3)
        ax_attn.plot(
            x, [p.max_attn_logit.mean for p in ps], "-o", color=color, lw=1.8, ms=5, zorder=3
        )
        if seeds > 1:
            _band(ax_loss, x, [p.capped_final for p in ps], color)
            _band(ax_attn, x, [p.max_attn_logit for p in ps], color)
        for p, yi in zip(ps, y, strict=True):
            label = _short(p, seeds)
            if not label:
                continue
            sev = Severity.ERROR if p.diverged or _worst_point(p) == "error" else Severity.WARNING
            ax_loss.plot(
                [p.lr],
                [yi],
                marker="X" if p.diverged else "o",
                ms=13,
                mfc="none",
                mec=SEVERITY_COLOR[sev],
                mew=2,
                zorder=4,
            )
            used.update(part.split(" ")[0] for part in label.split(","))
            # Stagger labels by setting so two settings' labels at one LR do not overlap.
            dy = 14 + 11 * si if si % 2 == 0 else -(14 + 11 * (si - 1))
            ax_loss.annotate(
                label,
                (p.lr, yi),
                xytext=(0, dy if n > 1 else 14),
                textcoords="offset points",
                ha="center",
                fontsize=7.5,
                color=color,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
                zorder=5,
            )
    if l0s:
        ax_loss.axhline(float(np.mean(l0s)), color="#777777", ls="--", lw=1, zorder=1)
        ax_loss.annotate(
            "initial loss ℓ₀ (cap)",
            (0.01, float(np.mean(l0s))),
            xycoords=("axes fraction", "data"),
            xytext=(2, -10),
            textcoords="offset points",
            fontsize=8,
            color="#555555",
        )
    over = f", mean over {seeds} seeds, bars min–max" if seeds > 1 else ""
    ax_loss.set_ylabel("final loss  (min(final, ℓ₀))")
    ax_loss.set_title(
        f"Final loss vs learning rate · preset {result.preset}, "
        f"recipe {result.recipe or '-'}{over}",
        fontsize=11,
        loc="left",
    )
    ax_attn.set_ylabel("max attention logit")
    ax_attn.set_yscale("log")
    ax_attn.set_xlabel("peak learning rate")
    ax_attn.set_title("Max attention logit over training (log scale)", fontsize=10, loc="left")
    for ax in (ax_loss, ax_attn):
        ax.set_xscale("log")
        ax.grid(True, which="major", alpha=0.3)
        ax.tick_params(labelsize=8.5)
    ax_attn.xaxis.set_minor_formatter(NullFormatter())
    if len(result.lrs) <= 8:  # tick exactly the swept LRs: the reader wants to read cells off
        ax_attn.set_xticks(list(result.lrs), labels=[f"{v:.3g}" for v in result.lrs])
        ax_attn.xaxis.set_minor_locator(NullLocator())
    else:
        ax_attn.xaxis.set_major_locator(LogLocator(base=10))
        ax_attn.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    if len(result.lrs) > 1:
        lo, hi = min(result.lrs), max(result.lrs)
        ax_attn.set_xlim(lo / 10**0.15, hi * 10**0.15)
    handles, labels = ax_loss.get_legend_handles_labels()
    handles += [
        Line2D(
            [],
            [],
            marker="o",
            ls="none",
            ms=10,
            mfc="none",
            mec=SEVERITY_COLOR[Severity.WARNING],
            mew=2,
        ),
        Line2D(
            [],
            [],
            marker="X",
            ls="none",
            ms=10,
            mfc="none",
            mec=SEVERITY_COLOR[Severity.ERROR],
            mew=2,
        ),
    ]
    labels += ["unstable (warning/error finding)", "diverged (NaN/Inf), drawn at ℓ₀"]
    ax_loss.legend(handles, labels, fontsize=8, loc="best", framealpha=0.9)
    if l0s:  # headroom above the l0 cap, so labels of diverged cells stay inside the axes
        lo, hi = ax_loss.get_ylim()
        ax_loss.set_ylim(lo, max(hi, max(l0s) + 0.12 * (max(l0s) - lo)))
    key = [(short, kind) for kind, short in SHORT_KIND.items() if short in used]
    if key:  # a legend, not fig.text: the layout engine makes room for legends
        blank = [Line2D([], [], ls="none") for _ in key]
        ax_attn.legend(
            blank,
            [f"{short} = {kind}" for short, kind in key],
            title="labels",
            fontsize=7.5,
            title_fontsize=7.5,
            loc="best",
            handlelength=0,
            handletextpad=0,
            framealpha=0.9,
        )
    return fig


def sweep_plot_files(
    result: SweepResult, stem: str = "sweep", formats: tuple[str, ...] = ("png", "svg")
) -> dict[str, bytes]:
    """The sweep figure as ``<stem>.<fmt>`` -> bytes for each format (writes nothing)."""
    fig = plot_sweep(result)
    return {f"{stem}.{fmt}": figure_bytes(fig, fmt) for fmt in formats}


def render_sweep(result: SweepResult, fmt: str, *, width: int = 120) -> str:
    """One sweep report as a string in ``fmt`` (text without colour, ``width`` columns): the
    registry's sweep renderers (``stabdiag.render.RENDERERS``)."""
    from stabdiag.render import RenderOptions, render

    return render(result, fmt, RenderOptions(width=width))
