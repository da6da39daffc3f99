"""The overlay figure of `stabdiag verify`: per replayed event, the train loss of the control
branch and of every remedy branch around the event, so a reader sees what each change did.

Built on ``matplotlib.figure.Figure`` directly (no pyplot state), as the other figures are.
"""

from __future__ import annotations

import math

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from stabdiag.render.plots import figure_bytes
from stabdiag.verify import VerifyResult, train_losses

MARGIN = 5
"""Steps shown before the branch point (the shared history, for context)."""


def overlay_figure(result: VerifyResult) -> Figure | None:
    """One panel per replayed event; None when no event was replayed."""
    events = [e for e in result.events if e.control_branch is not None]
    if not events:
        return None
    fig = Figure(figsize=(8, 3.2 * len(events)), layout="constrained")
    FigureCanvasAgg(fig)
    for i, e in enumerate(events, start=1):
        ax = fig.add_subplot(len(events), 1, i)
        start = (e.trials[0].checkpoint_step if e.trials else e.event.start) - MARGIN
        curves = [("control (no change)", e.control_branch, "black")]
        curves += [(f"{t.change.remedy}: {t.verdict}", t.branch, None) for t in e.trials]
        for label, path, color in curves:
            pts = sorted(
                (s, v) for s, v in train_losses(path).items() if s >= start and math.isfinite(v)
            )
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(
                    xs,
                    ys,
                    label=label,
                    color=color,
                    lw=1.6 if color else 1.1,
                    ls="--" if color else "-",
                    zorder=3 if color else 2,
                )
        ax.axvspan(e.event.start - 0.5, e.event.end + 0.5, color="tab:red", alpha=0.12, lw=0)
        ax.set_title(f"{e.event.label}: {e.verdict_line}", fontsize=8, loc="left", wrap=True)
        ax.set_xlabel("step")
        ax.set_ylabel("train loss")
        ax.legend(fontsize=7, loc="upper right")
    return fig


def overlay_bytes(result: VerifyResult, fmt: str = "png") -> bytes | None:
    """The overlay figure as ``fmt`` (png or svg) bytes; None when there is nothing to draw."""
    fig = overlay_figure(result)
    return None if fig is None else figure_bytes(fig, fmt)
