"""Side-by-side tables of a detection benchmark result: plain text, Markdown and JSON."""

from __future__ import annotations

import json
from typing import Any

from stabbench.scoring import OURS

_COLS = ("detector", "P", "R", "F1", "lat med", "lat p90", "FA/10k", "labels", "TP", "FP")


def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}" if abs(x) < 1000 else f"{x:.0f}"
    return str(x)


def _row(name: str, m: dict) -> list[str]:
    return [
        name,
        _f(m["precision"]),
        _f(m["recall"]),
        _f(m["f1"]),
        _f(m["latency_median"], 1),
        _f(m["latency_p90"], 1),
        _f(m["false_alarms_per_10k"], 3),
        _f(m["labels"]),
        _f(m["tp"]),
        _f(m["fp"]),
    ]


def rows(res: dict) -> list[tuple[str, list[list[str]]]]:
    """(section title, table rows) per class, then overall."""
    out = []
    for cls, dets in res["classes"].items():
        body = [_row(OURS, dets[OURS])] + [_row(n, m) for n, m in dets.items() if n != OURS]
        out.append((cls, body))
    out.append(("overall", [_row(n, m) for n, m in res["overall"].items()]))
    return out


def text(res: dict, title: str = "") -> str:
    lines = [title] if title else []
    for sec, body in rows(res):
        table = [list(_COLS)] + body
        w = [max(len(r[i]) for r in table) for i in range(len(_COLS))]
        lines.append(f"\n[{sec}]")
        for r in table:
            lines.append(
                "  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r))
            )
    return "\n".join(lines)


def markdown(results: dict[str, dict], goal: dict | None = None, notes: str = "") -> str:
    lines = ["# Detection benchmark", ""]
    if notes:
        lines += [notes, ""]
    for split, res in results.items():
        lines += [
            f"## {split} ({res['cases']} runs, {res['labels']} labelled events, "
            f"{res['clean_steps']} clean steps)",
            "",
        ]
        for sec, body in rows(res):
            lines += [f"### {sec}", "", "| " + " | ".join(_COLS) + " |", "|" + "---|" * len(_COLS)]
            lines += ["| " + " | ".join(r) + " |" for r in body]
            lines.append("")
    if goal:
        lines += ["## Goal check", "", "```", json.dumps(goal, indent=2, default=str), "```", ""]
    return "\n".join(lines)
