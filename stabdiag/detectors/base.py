"""The detector contract: a code, a kind slug, a docstring that explains it, and a pure check.

A check takes one run's ``RunData`` and returns its findings, or a ``Skipped`` saying why it
could not judge (missing metric, too few points). It never reads files and never prints.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stabdiag.findings import Finding, Skipped
from stabdiag.table import RunData

CheckResult = Sequence[Finding] | Skipped


@dataclass(frozen=True)
class Detector:
    """A registered detector. ``doc`` is the module docstring shown by ``stabdiag explain``."""

    code: str
    kind: str
    summary: str
    doc: str
    check: Callable[..., CheckResult]  # check(run) or check(run, config)
    config: type | None = None  # the module's frozen Config dataclass: thresholds a policy may set

    def skipped(self, run: RunData, reason: str) -> Skipped:
        return Skipped(code=self.code, kind=self.kind, run=run.name, reason=reason)
