"""Render a `stabdiag verify` result: a table per replayed event, a verdict line, or JSON.

Pure functions from a VerifyResult to text (``stabdiag.render.RENDERERS``); the CLI prints them.
"""

from __future__ import annotations

from typing import Any

from stabdiag import words
from stabdiag.render.json import strict_json
from stabdiag.textfmt import num
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
                num(c.loss_at_end, ".4g"),
                num(c.loss_after, ".4g"),
                num(c.final_loss, ".4g"),
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
                num(o.loss_at_end, ".4g"),
                num(o.loss_after, ".4g"),
                num(o.final_loss, ".4g"),
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
        f"stabdiag verify · {result.run_dir} · {words.count(len(result.events), 'event')}, "
        f"{words.count(len(result.trials), 'remedy branch', 'remedy branches')}, {result.wall_s:.1f} s"
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


def render_json(result: VerifyResult) -> str:
    """``VerifyResult.to_dict()`` as strict JSON (NaN/Inf become null)."""
    return strict_json(result.to_dict())
