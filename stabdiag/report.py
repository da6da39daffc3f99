"""The ``Report``: everything one analysis found, ready for any renderer.

Renderers read only this. The table is kept for plots but never serialised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from stabdiag import words
from stabdiag.findings import Finding, Severity, Skipped
from stabdiag.remedies import Remedy
from stabdiag.table import MetricsTable, RunData

SCHEMA_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class RunSummary:
    """One run as the report shows it: where it came from, what it holds, what was wrong with the input."""

    name: str
    path: str
    format: str
    steps: tuple[int, int] | None
    metrics: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    mapping: tuple[tuple[str, str, str], ...] = ()
    # The loss the run was judged on ({"metric", "series", "why"}), None when there was none.
    loss: dict[str, str] | None = None
    judged: bool = True
    judged_reason: str = ""
    # What the run was configured to do (runconfig.RunConfig) and the likely cause of its trouble
    # (diagnosis.Diagnosis); None when nothing was read / the run was not judged.
    config: Any = None
    diagnosis: Any = None

    def config_line(self) -> str:
        """'LR 0.03 constant, no warm-up, clip 1.0, AdamW β2 0.95, bf16' ('' when nothing was read)."""
        return self.config.line() if self.config else ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "format": self.format,
            "steps": list(self.steps) if self.steps else None,
            "metrics": list(self.metrics),
            "warnings": list(self.warnings),
            "judged": self.judged,
            "judged_reason": self.judged_reason,
            "loss": self.loss,
            "config": (
                {
                    "line": self.config.line(),
                    "framework": self.config.fw,
                    "settings": self.config.to_dict(),
                }
                if self.config is not None and self.config.settings()
                else None
            ),
            "diagnosis": self.diagnosis.to_dict() if self.diagnosis is not None else None,
        }


@dataclass(frozen=True, kw_only=True)
class Report:
    """Everything one analysis found; what ``stabdiag.analyze`` returns and every renderer reads.

    ``runs``: one RunSummary per run read, in load order. ``findings``: every classified event,
    in run order, then by step. ``skipped``: checks that could not run ("not checked", never
    silent). ``remedies``: ranked advice per run. ``errors``: files that could not be read while
    others could (one line each). ``version``: the stabdiag version that made it. ``table``: the
    tidy table that was read; ``series``: each run's series, cut from it once (``run_data``; plots
    and compare read these). Neither is serialised. ``policy``: the effective policy.
    ``to_dict()`` is the JSON contract (DESIGN.md), ``to_frame()`` the findings as a DataFrame;
    in Jupyter the report shows as a summary table."""

    runs: tuple[RunSummary, ...]
    findings: tuple[Finding, ...]
    skipped: tuple[Skipped, ...]
    remedies: tuple[Remedy, ...]
    errors: tuple[str, ...] = ()
    version: str = ""
    table: MetricsTable | None = field(default=None, compare=False, repr=False)
    # Run name -> the series the run was judged on (RunData, loss choice applied), cut from the
    # table once by ``diagnose``: plots and compare read them through ``run_data``. Not serialised.
    series: Mapping[str, RunData] = field(default_factory=dict, compare=False, repr=False)
    # The effective policy (policy.Policy) the report was made under, set by ``stabdiag.analyze``:
    # ``failing()`` reads its fail-on. Not part of the JSON contract.
    policy: Any = field(default=None, compare=False, repr=False)

    @cached_property
    def _own(self) -> tuple[dict[str, list[Finding]], set[str]]:
        """Findings by run, and the runs whose loss checks were skipped: built once, so renderers
        asking per run stay linear in the runs (a scan per run took 100,000 runs to hours)."""
        by_run: dict[str, list[Finding]] = {}
        for f in self.findings:
            by_run.setdefault(f.run, []).append(f)
        no_loss = {s.run for s in self.skipped if s.kind == "loss-spike"}
        return by_run, no_loss

    def worst(self, run: str | None = None) -> Severity | None:
        sev = [f.severity for f in (self.findings if run is None else self.findings_of(run))]
        return max(sev) if sev else None

    def at_or_above(self, level: Severity) -> list[Finding]:
        return [f for f in self.findings if f.severity >= level]

    def findings_of(self, run: str) -> list[Finding]:
        return list(self._own[0].get(run, ()))

    def has_loss(self, run: str) -> bool:
        return run not in self._own[1]

    def judged_runs(self) -> list[str]:
        """Runs something could be said about: a loss series, or a finding from another signal
        (a log of only DeepSpeed overflow lines is still evidence). Others are "not judged"."""
        return [r.name for r in self.runs if r.judged]

    def summary_of(self, run: str) -> RunSummary | None:
        return self._summaries.get(run)

    @cached_property
    def _summaries(self) -> dict[str, RunSummary]:
        return {r.name: r for r in reversed(self.runs)}  # the first of a name, as a scan finds

    def run_data(self, run: str) -> RunData | None:
        """The run's series as the detectors saw them (its judged loss under ``train/loss`` or
        ``val/loss``), as ``diagnose`` cut them once; None for a run the report does not hold.
        A report built without them (by hand, from an older caller) is cut from ``table`` here,
        on each call."""
        data = self.series.get(run)
        if data is None and self.table is not None and run in self.table.runs():
            from stabdiag.diagnose import with_loss

            data = with_loss(self.table.run_data(run))
        return data

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "version": self.version,
            "runs": [r.to_dict() for r in self.runs],
            "findings": [f.to_dict() for f in self.findings],
            "skipped": [s.to_dict() for s in self.skipped],
            "remedies": [r.to_dict() for r in self.remedies],
            "errors": list(self.errors),
        }

    def failing(self) -> list[Finding]:
        """Findings at or above their run's ``fail-on`` (the policy's; ``error`` without one):
        the CLI exits 1 when this is non-empty."""
        if self.policy is not None:
            return self.policy.failing(self)
        return self.at_or_above(Severity.ERROR)

    def to_frame(self) -> Any:
        """The findings as a pandas DataFrame, one row per finding (columns as in ``to_dict``,
        severity as a word, evidence as a dict), for filtering and plotting in a notebook."""
        import pandas as pd

        cols = [
            "run",
            "code",
            "kind",
            "severity",
            "metric",
            "step_start",
            "step_end",
            "message",
            "evidence",
        ]
        rows = [{c: f.to_dict()[c] for c in cols} for f in self.findings]
        frame = pd.DataFrame(rows, columns=cols)
        return frame.astype({"step_start": "Int64", "step_end": "Int64"})

    def _repr_html_(self) -> str:
        """A summary table for Jupyter: one row per run with its verdict and findings. Every
        string from a log (run names, paths, messages) is HTML-escaped."""
        from html import escape

        from stabdiag.textfmt import EN_DASH, at_steps, step_span

        def _at(f: Finding) -> str:
            where = at_steps(f.step_start, f.step_end, dash=EN_DASH)
            return f" at {where}" if where else ""

        rows = []
        for r in self.runs:
            mine = self.findings_of(r.name)
            worst = self.worst(r.name)
            verdict = (str(worst) if worst is not None else "ok") if r.judged else "not judged"
            steps = step_span(*r.steps, dash=EN_DASH) if r.steps else EN_DASH
            listed = "<br>".join(
                escape(f"{f.severity} {f.code} {f.kind}{_at(f)}: {f.message}") for f in mine[:5]
            ) + (f"<br>\u2026 {len(mine) - 5} more" if len(mine) > 5 else "")
            rows.append(
                f"<tr><td>{escape(r.name)}</td><td>{escape(r.format)}</td><td>{escape(steps)}</td>"
                f'<td>{escape(verdict)}</td><td>{len(mine)}</td><td style="text-align:left">{listed}</td></tr>'
            )
        n = counts(self.findings)
        head = escape(
            f"stabdiag {self.version}: {words.count(len(self.runs), 'run')}, " + words.tally(n)
        )
        errors = "".join(f"<p>{escape(e)}</p>" for e in self.errors)
        return (
            f"<div><p><b>{head}</b></p><table><thead><tr><th>run</th><th>format</th><th>steps</th>"
            f'<th>verdict</th><th>findings</th><th style="text-align:left">details</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>{errors}</div>"
        )


def counts(findings: Sequence[Finding]) -> dict[str, int]:
    out = {s.label: 0 for s in Severity}
    for f in findings:
        out[f.severity.label] += 1
    return out
