"""Render a baseline comparison (``stabdiag compare``): a checklist with a verdict, or JSON.

Pure functions from a ``Comparison`` to text; the CLI writes them.
"""

from __future__ import annotations

from stabdiag.compare import Comparison
from stabdiag.render.json import strict_json
from stabdiag.textfmt import step_span

MARK = {True: "✘ worse", False: "✔ ok", None: "· not checked"}
"""A check's answer: worse, not worse, or not answerable (never read as a pass)."""


def render_comparison_text(c: Comparison) -> str:
    span = step_span(*c.common_steps) if c.common_steps else "-"
    lines = [
        f"stabdiag compare: {c.run} vs baseline {c.baseline} · {c.n_common} common steps ({span})",
        "",
    ]
    lines += [f"  {MARK[ch.worse]:<14} {ch.name:<10} {ch.summary}" for ch in c.checks]
    lines += [f"  note: {n}" for n in c.notes]
    lines += [
        "",
        "verdict: "
        + ("less stable than the baseline" if c.worse else "not worse than the baseline"),
    ]
    return "\n".join(lines) + "\n"


def render_comparison_json(c: Comparison) -> str:
    """``Comparison.to_dict()`` as strict JSON (NaN/Inf become null)."""
    return strict_json(c.to_dict())
