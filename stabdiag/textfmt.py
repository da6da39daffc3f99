"""The few conventions every report and command shares: step ranges, numbers, fail-on levels.

Each used to be written out again in every renderer, in ``compare``, the sweep and verify
reports and the CLI, and the copies had started to disagree (a one-step finding read "steps
120–120" in the notebook table, "step 120" everywhere else). One definition each keeps every
output saying the same thing the same way. Pure functions, no imports beyond the standard
library and ``findings``, so any layer may use them.
"""

from __future__ import annotations

import math

from stabdiag.errors import ConfigError
from stabdiag.findings import Severity

DASH = "-"
"""Range dash of plain text (terminal, CI annotations, JUnit, logs): ASCII, greppable."""
EN_DASH = "\u2013"
"""Range dash of typeset output (Markdown, HTML), and the mark of a missing number there."""

FAIL_ON = ("info", "warning", "error", "never")
"""Every ``fail-on`` level, mildest first; ``never`` fails nothing."""


def step_span(
    start: int | None, end: int | None = None, *, dash: str = DASH, none: str = DASH
) -> str:
    """``120`` for one step, ``120-180`` for a range (inclusive), ``none`` without a step."""
    if start is None:
        return none
    if end is None or end == start:
        return str(start)
    return f"{start}{dash}{end}"


def at_steps(start: int | None, end: int | None = None, *, dash: str = DASH) -> str:
    """``step 120`` / ``steps 120-180``; empty without a step (a whole-run finding)."""
    if start is None:
        return ""
    word = "step" if end is None or end == start else "steps"
    return f"{word} {step_span(start, end, dash=dash)}"


def num(
    x: float | None, spec: str = ".3g", *, missing: str = DASH, nonfinite: str | None = None
) -> str:
    """``x`` in the format ``spec`` (``.3g``, ``.3f``, ``+.4g``, ...); ``missing`` for None.

    ``nonfinite``: what NaN/Inf read as where they mean "no value" (a failed sweep cell); by
    default they print as ``nan``/``inf``, which is evidence where a loss diverged."""
    if x is None:
        return missing
    if nonfinite is not None and not math.isfinite(x):
        return nonfinite
    return format(x, spec)


def parse_fail_on(value: object, where: str = "--fail-on") -> Severity | None:
    """A ``fail-on`` level as the Severity a finding must reach to fail; None for ``never``.

    ``where`` names the setting in the error (``--fail-on``, ``stabdiag.toml: fail-on``), which
    is a ConfigError: one line, exit 2."""
    if not isinstance(value, str) or value not in FAIL_ON:
        raise ConfigError(f"{where} {value!r}: expected one of {', '.join(FAIL_ON)}")
    return None if value == "never" else Severity.parse(value)
