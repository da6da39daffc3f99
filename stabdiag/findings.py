"""Results of the detectors: ``Finding`` and ``Skipped``, both frozen so reports cannot mutate them."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Severity(enum.IntEnum):
    """How bad a finding is: ``INFO`` < ``WARNING`` < ``ERROR``, ordered so ``--fail-on`` can
    compare. An int enum for ordering; it prints and serialises as its word (``"warning"``)."""

    INFO = 0
    WARNING = 1
    ERROR = 2

    def __bool__(self) -> bool:
        # INFO is 0, yet a severity is never "nothing": `if worst:` must be true for INFO.
        return True

    @property
    def label(self) -> str:
        """The word: ``info``, ``warning`` or ``error`` (what reports and the JSON print)."""
        return self.name.lower()

    def __str__(self) -> str:
        # An IntEnum prints as its number on 3.11+; people read "error", not "2".
        return self.label

    def __format__(self, spec: str) -> str:
        return format(self.label, spec)

    @classmethod
    def parse(cls, text: str) -> Severity:
        """The severity named by ``text`` (any case); ValueError names the accepted words."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(
                f"unknown severity {text!r}; expected info, warning or error"
            ) from None


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One classified event in one run.

    ``step_start``/``step_end`` locate it on the run's step axis (inclusive). ``evidence`` holds
    the numbers behind the verdict (baseline, peak, z-score, ...) as plain JSON-able values;
    remedies read concrete values from it.
    """

    code: str
    kind: str
    severity: Severity
    run: str
    metric: str
    step_start: int | None
    step_end: int | None
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The finding as the JSON report writes it (severity as a word)."""
        return {
            "code": self.code,
            "kind": self.kind,
            "severity": self.severity.label,
            "run": self.run,
            "metric": self.metric,
            "step_start": self.step_start,
            "step_end": self.step_end,
            "message": self.message,
            "evidence": self.evidence,
        }


@dataclass(frozen=True, kw_only=True)
class Skipped:
    """A check that could not run on a run (missing metric, too few points): shown as "not checked"."""

    code: str
    kind: str
    run: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """The skip as the JSON report writes it (``kind``, ``run``, ``reason``)."""
        return {"kind": self.kind, "run": self.run, "reason": self.reason}
