"""What ``stabdiag explain`` prints for a detector, as plain text, for the CLI and the docs alike.

A threshold's meaning is written once, as the attribute docstring under its field in the
detector's ``Config`` (the form documentation generators read too). Dataclasses drop those
strings at run time, so they are read back from the module's source with ``ast``: the source of
our own package, never a user file.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import sys
import textwrap
from dataclasses import dataclass
from typing import Any

from stabdiag.detectors.base import Detector


@dataclass(frozen=True)
class Threshold:
    """One ``Config`` field of a detector: the policy key, its default and what it means."""

    name: str
    default: Any
    help: str


@functools.cache
def field_docs(config: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass: ``{field name: the string literal under it}``.

    Empty when the source cannot be read (a frozen or zipped install without ``.py`` files):
    ``explain`` then shows the names and defaults alone rather than failing.
    """
    try:
        source = inspect.getsource(sys.modules[config.__module__])
    except (OSError, TypeError, KeyError):
        return {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef) and node.name == config.__name__:
            return _attribute_docs(node)
    return {}


def _attribute_docs(cls: ast.ClassDef) -> dict[str, str]:
    docs: dict[str, str] = {}
    body = cls.body
    for node, after in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def thresholds(detector: Detector) -> tuple[Threshold, ...]:
    """The detector's settable thresholds in declaration order (empty when it has none)."""
    if detector.config is None:
        return ()
    docs = field_docs(detector.config)
    return tuple(
        Threshold(f.name, f.default, docs.get(f.name, ""))
        for f in dataclasses.fields(detector.config)
    )


def policy_table(detector: Detector) -> str:
    """The policy-file table a detector's thresholds are set under."""
    return f"[tool.stabdiag.detectors.{detector.kind}]"


def explain_text(detector: Detector, width: int = 100) -> str:
    """The full ``stabdiag explain KIND`` text: title, the module docstring, then each threshold
    with its default and meaning, wrapped to ``width`` columns."""
    parts = [f"{detector.code} {detector.kind}", "", detector.doc.strip()]
    rows = thresholds(detector)
    if detector.config is not None:
        parts += ["", f"Thresholds (set them under {policy_table(detector)}):"]
        if not rows:
            parts.append("    none: this check has no threshold to set")
        for t in rows:
            parts.append(f"    {t.name} = {t.default!r}")
            if t.help:
                parts.append(
                    textwrap.fill(
                        " ".join(t.help.split()),
                        width=width,
                        initial_indent=" " * 8,
                        subsequent_indent=" " * 8,
                        break_on_hyphens=False,
                    )
                )
    return "\n".join(parts)


__all__ = ["Threshold", "explain_text", "field_docs", "policy_table", "thresholds"]
