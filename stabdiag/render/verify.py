"""Render a `stabdiag verify` result: a table per replayed event, a verdict line, or JSON.

Pure functions from a VerifyResult to text; the CLI prints them.
"""

from __future__ import annotations

import json
import math
from typing import Any

from stabdiag.verify import EventResult, Outcome, VerifyResult

_HEAD = (
    "remedy",
    "changed",
    "recurred",
    "verdict",
    "loss@end",
    "loss after",
    "final loss",
    "steps",
)


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def _recurred(o: Outcome) -> str:
    return o.status if o.recurred is None else ("yes" if o.recurred else "no")


def _changed(changes: dict[str, list[Any]]) -> str:
    out = []
    for key, (old, new) in changes.items():
        if key == "skip_batches":
            added = [s for s in new if s not in (old or [])]
            out.append(f"skip batches {', '.join(added)}")
        else:
            out.append(f"{key} {old} -> {new}")
    return "; ".join(out) or "nothing"


def _rows(e: EventResult) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    if e.control is not None:
        c = e.control
        rows.append(
            (
                "control",
                "nothing",
                _recurred(c),
                "-",
                _f(c.loss_at_end),
                _f(c.loss_after),
                _f(c.final_loss),
                str(c.steps),
            )
        )
    for t in e.trials:
        o = t.outcome
        rows.append(
            (
                t.change.remedy,
                _changed(t.changes),
                _recurred(o),
                t.verdict,
                _f(o.loss_at_end),
                _f(o.loss_after),
                _f(o.final_loss),
                str(o.steps),
            )
        )
    return rows


def _title(e: EventResult, result: VerifyResult) -> str:
    ckpt = e.trials[0].checkpoint_step if e.trials else None
    where = f" (branched at step {ckpt})" if ckpt is not None else ""
    return f"{e.event.label} in {result.run_dir.name}{where}"


def render_text(result: VerifyResult) -> str:
    lines = [
        f"stabdiag verify · {result.run_dir} · {len(result.events)} event(s), "
        f"{len(result.trials)} remedy branch(es), {result.wall_s:.1f} s"
    ]
    if not result.events:
        lines.append("nothing to verify: no warning-or-worse finding in the run")
    for e in result.events:
        lines += ["", _title(e, result)]
        rows = _rows(e)
        if rows:
            widths = [max(len(r[i]) for r in [_HEAD, *rows]) for i in range(len(_HEAD))]
            for r in [_HEAD, *rows]:
                lines.append(
                    "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                )
        lines.append(f"  verdict: {e.verdict_line}")
        for t in e.trials:
            lines.append(f"  - {t.change.remedy}: {t.verdict} ({t.reason}) -> {t.branch}")
        for u in e.untried:
            lines.append(f"  not tried: {u}")
    if result.interrupted:
        lines += ["", "interrupted: re-run the same command to finish the remaining branches"]
    return "\n".join(lines) + "\n"


def render_markdown(result: VerifyResult) -> str:
    lines = [f"# stabdiag verify: `{result.run_dir.name}`", ""]
    if not result.events:
        lines.append("Nothing to verify: no warning-or-worse finding in the run.")
    for e in result.events:
        lines += [f"## {_title(e, result)}", ""]
        rows = _rows(e)
        if rows:
            lines.append("| " + " | ".join(_HEAD) + " |")
            lines.append("|" + "---|" * len(_HEAD))
            for r in rows:
                lines.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
            lines.append("")
        lines += [f"**Verdict:** {e.verdict_line}", ""]
        for u in e.untried:
            lines.append(f"- not tried: {u}")
        if e.untried:
            lines.append("")
    if result.interrupted:
        lines.append("_Interrupted: re-run the same command to finish the remaining branches._")
    return "\n".join(lines).rstrip() + "\n"


def _strict(value: Any) -> Any:
    """NaN and +-inf -> null: the JSON is strict for any parser."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def render_json(result: VerifyResult) -> str:
    return json.dumps(_strict(result.to_dict()), indent=2, allow_nan=False) + "\n"


RENDERERS = {"text": render_text, "markdown": render_markdown, "json": render_json}
