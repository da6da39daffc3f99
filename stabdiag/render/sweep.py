"""Renderers for sweep results: terminal table, JSON, Markdown and the LR-sensitivity figure.

The figure is the paper's (Wortsman et al. 2023, Fig. 1): final loss against learning rate on a
log axis, one line per stabilizer setting, so a setting that "trains to low loss at high LR" is
visibly flat; the panel under it shows the max attention logit, the mechanism QK-norm acts on.
Unstable cells get a ring coloured by severity and a short label of their finding kinds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from stabdiag.atomic import write_atomic
from stabdiag.console import SEVERITY_STYLE
from stabdiag.findings import Severity
from stabdiag.render.markdown import ICON, md
from stabdiag.render.plots import SEVERITY_COLOR, figure_bytes
from stabdiag.sweep.results import DEFINITIONS, CellResult, SweepResult

# Okabe-Ito, colour-blind safe; settings cycle through it.
SETTING_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
SHORT_KIND = {
    "attention-logit-growth": "attn", "output-logit-drift": "logZ", "loss-spike": "spike",
    "grad-spike": "gspike", "grad-explosion": "gexpl", "nonfinite": "NaN",
    "fp16-overflow": "fp16", "divergence": "div", "stall": "stall", "restart": "restart",
    "lr-schedule": "lr", "rank-divergence": "rank",
}


def _num(x: float, fmt: str = ".3f") -> str:
    return format(x, fmt) if math.isfinite(x) else "–"


def _lr(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else "–"


def _kinds(c: CellResult) -> str:
    return ", ".join(f"{k} ({sev})" for k, sev in c.findings) or "–"


def _worst(c: CellResult) -> str | None:
    return c.findings[0][1] if c.findings else None


def _final(c: CellResult) -> str:
    return "diverged" if c.diverged else _num(c.final_loss)


# --- terminal -------------------------------------------------------------------------------


def render_sweep_text(result: SweepResult) -> RenderableType:
    head = Text(f"stabdiag sweep · preset {result.preset}, recipe {result.recipe or '-'} · "
                f"{len(result.settings)} settings × {len(result.lrs)} LRs on {result.device} · "
                f"{result.wall_s:.0f} s", style="bold")
    summary = Table(box=None, pad_edge=False, header_style="bold", title_justify="left")
    for col, just in (("setting", "left"), ("LR sensitivity", "right"), ("best final loss", "right"),
                      ("at LR", "right"), ("unstable cells", "right")):
        summary.add_column(col, justify=just)  # type: ignore[arg-type]
    for s in result.settings:
        summary.add_row(s.name, _num(s.lr_sensitivity), _num(s.best_final_loss), _lr(s.best_lr),
                        f"{s.unstable_cells}/{len(result.cells_of(s.name))}")
    cells = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("setting", "LR", "final", "best", "initial", "max attn", "logZ drift"):
        cells.add_column(col, justify="left" if col == "setting" else "right", no_wrap=True)
    cells.add_column("findings", overflow="fold")
    for s in result.settings:
        for c in result.cells_of(s.name):
            worst = _worst(c)
            cells.add_row(c.setting, _lr(c.lr),
                          Text(_final(c), style="error" if c.diverged else ""),
                          _num(c.best_loss), _num(c.initial_loss), _num(c.max_attn_logit, ".3g"),
                          _num(c.logz_drift, "+.2f"),
                          Text(_kinds(c), style=SEVERITY_STYLE.get(worst or "", "dim")))
    notes = Text(f"final loss: {DEFINITIONS['final_loss']}\n"
                 f"LR sensitivity: {DEFINITIONS['lr_sensitivity']}", style="dim")
    parts: list[RenderableType] = [head, Text(""), summary, Text(""), cells, Text(""), notes]
    if result.plots:
        parts.append(Text("plots: " + ", ".join(result.plots), style="dim"))
    return Group(*parts)


# --- JSON / Markdown ------------------------------------------------------------------------


def render_sweep_json(result: SweepResult) -> str:
    return json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n"


def render_sweep_markdown(result: SweepResult, *, image: str | None = None) -> str:
    """GitHub-flavoured Markdown; setting names come from the user and go through `md`."""
    lines = [
        f"## stabdiag sweep: preset {md(result.preset)}, recipe {md(result.recipe or '-')} · "
        f"{len(result.settings)} settings × {len(result.lrs)} LRs",
        "",
        "| setting | LR sensitivity | best final loss | at LR | unstable cells |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in result.settings:
        lines.append(f"| {md(s.name)} | {_num(s.lr_sensitivity)} | {_num(s.best_final_loss)} "
                     f"| {_lr(s.best_lr)} | {s.unstable_cells}/{len(result.cells_of(s.name))} |")
    lines += ["", "| | setting | LR | final loss | best | initial | max attn logit | logZ drift "
              "| findings |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for s in result.settings:
        for c in result.cells_of(s.name):
            icon = "💥" if c.diverged else ICON[_worst(c)]
            kinds = ", ".join(f"{md(k)} ({sev})" for k, sev in c.findings) or "–"
            lines.append(f"| {icon} | {md(c.setting)} | {_lr(c.lr)} | {_final(c)} "
                         f"| {_num(c.best_loss)} | {_num(c.initial_loss)} "
                         f"| {_num(c.max_attn_logit, '.3g')} | {_num(c.logz_drift, '+.2f')} "
                         f"| {kinds} |")
    lines += ["", f"- **final loss**: {md(DEFINITIONS['final_loss'])}",
              f"- **LR sensitivity**: {md(DEFINITIONS['lr_sensitivity'])}", ""]
    if image:
        url = image.replace(" ", "%20").replace(")", "%29").replace("(", "%28")
        lines += [f"![final loss vs learning rate]({url})", ""]
    return "\n".join(lines)


# --- figure ---------------------------------------------------------------------------------


def _capped(c: CellResult) -> float:
    """What the LR sensitivity counts: min(final, l0), a diverged cell at l0."""
    if c.diverged:
        return c.initial_loss
    return min(c.final_loss, c.initial_loss) if math.isfinite(c.initial_loss) else c.final_loss


def _short(c: CellResult) -> str:
    kinds = [SHORT_KIND.get(k, k) for k in c.unstable_kinds]
    if c.diverged and "NaN" not in kinds:
        kinds.insert(0, "NaN")
    return ",".join(kinds)


def plot_sweep(result: SweepResult) -> Figure:
    fig = Figure(figsize=(8.5, 7.2), layout="constrained")
    ax_loss, ax_attn = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    l0s = [c.initial_loss for c in result.cells if math.isfinite(c.initial_loss)]
    used: set[str] = set()
    n = len(result.settings)
    for si, s in enumerate(result.settings):
        color = SETTING_COLORS[si % len(SETTING_COLORS)]
        cs = result.cells_of(s.name)
        x = np.array([c.lr for c in cs])
        y = np.array([_capped(c) for c in cs])
        sens = f"LR sensitivity {s.lr_sensitivity:.3f}" if math.isfinite(s.lr_sensitivity) else "no finite cell"
        ax_loss.plot(x, y, "-o", color=color, lw=1.8, ms=5, label=f"{s.name}  ({sens})", zorder=3)
        ax_attn.plot(x, [c.max_attn_logit for c in cs], "-o", color=color, lw=1.8, ms=5, zorder=3)
        for c, yi in zip(cs, y, strict=True):
            if not c.unstable:
                continue
            sev = Severity.ERROR if c.diverged or _worst(c) == "error" else Severity.WARNING
            ax_loss.plot([c.lr], [yi], marker="X" if c.diverged else "o", ms=13, mfc="none",
                         mec=SEVERITY_COLOR[sev], mew=2, zorder=4)
            label = _short(c)
            used.update(label.split(","))
            # Stagger labels by setting so two settings' labels at one LR do not overlap.
            dy = 14 + 11 * si if si % 2 == 0 else -(14 + 11 * (si - 1))
            ax_loss.annotate(label, (c.lr, yi), xytext=(0, dy if n > 1 else 14),
                             textcoords="offset points", ha="center", fontsize=7.5, color=color,
                             bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
                             zorder=5)
    if l0s:
        ax_loss.axhline(float(np.mean(l0s)), color="#777777", ls="--", lw=1, zorder=1)
        ax_loss.annotate("initial loss ℓ₀ (cap)", (0.01, float(np.mean(l0s))),
                         xycoords=("axes fraction", "data"), xytext=(2, -10),
                         textcoords="offset points", fontsize=8, color="#555555")
    ax_loss.set_ylabel("final loss  (min(final, ℓ₀))")
    ax_loss.set_title(f"Final loss vs learning rate · preset {result.preset}, "
                      f"recipe {result.recipe or '-'}", fontsize=11, loc="left")
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
        ax_attn.set_xlim(lo / 10 ** 0.15, hi * 10 ** 0.15)
    handles, labels = ax_loss.get_legend_handles_labels()
    handles += [Line2D([], [], marker="o", ls="none", ms=10, mfc="none", mec=SEVERITY_COLOR[Severity.WARNING],
                       mew=2), Line2D([], [], marker="X", ls="none", ms=10, mfc="none",
                                      mec=SEVERITY_COLOR[Severity.ERROR], mew=2)]
    labels += ["unstable (warning/error finding)", "diverged (NaN/Inf), drawn at ℓ₀"]
    ax_loss.legend(handles, labels, fontsize=8, loc="best", framealpha=0.9)
    if l0s:  # headroom above the l0 cap, so labels of diverged cells stay inside the axes
        lo, hi = ax_loss.get_ylim()
        ax_loss.set_ylim(lo, max(hi, max(l0s) + 0.12 * (max(l0s) - lo)))
    key = [(short, kind) for kind, short in SHORT_KIND.items() if short in used]
    if key:  # a legend, not fig.text: the layout engine makes room for legends
        blank = [Line2D([], [], ls="none") for _ in key]
        ax_attn.legend(blank, [f"{short} = {kind}" for short, kind in key], title="labels",
                       fontsize=7.5, title_fontsize=7.5, loc="best", handlelength=0,
                       handletextpad=0, framealpha=0.9)
    return fig


def save_sweep_plot(result: SweepResult, stem: str | Path,
                    formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """Write `<stem>.png` and `<stem>.svg`; returns the paths."""
    fig = plot_sweep(result)
    paths = []
    for fmt in formats:
        p = Path(f"{stem}.{fmt}")
        write_atomic(p, figure_bytes(fig, fmt))
        paths.append(p)
    return paths


SWEEP_FORMATS = ("text", "json", "markdown")


def render_sweep(result: SweepResult, fmt: str, *, width: int = 120) -> str:
    """One sweep report as a string in `fmt` (text is rendered without colour, for files)."""
    if fmt == "json":
        return render_sweep_json(result)
    if fmt == "markdown":
        png = next((p for p in result.plots if p.endswith(".png")), None)
        return render_sweep_markdown(result, image=png)
    if fmt == "text":
        import io

        from rich.console import Console

        from stabdiag.console import THEME

        buf = io.StringIO()
        Console(file=buf, theme=THEME, width=width, color_system=None, highlight=False
                ).print(render_sweep_text(result))
        return buf.getvalue()
    raise ValueError(f"unknown sweep format {fmt!r}; expected one of {', '.join(SWEEP_FORMATS)}")
