"""JUnit XML: stability as tests, so CI dashboards (GitLab, Jenkins, Buildkite) show it natively.

One ``<testsuite>`` per run, one ``<testcase>`` per run x detector (every registered detector,
so a clean check shows as a pass rather than as nothing), a ``<failure>`` per finding at or above
``fail_on``, a ``<skipped>`` per check that could not run. Findings below ``fail_on`` go to the
testcase's ``<system-out>`` so they are visible without failing the build. Unreadable inputs
become ``<error>``s in a suite of their own.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections import defaultdict

from stabdiag.findings import Finding, Severity
from stabdiag.report import Report
from stabdiag.textfmt import at_steps

# XML 1.0 forbids most control characters even when escaped; log text may contain them.
_BAD_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _x(text: object) -> str:
    return _BAD_XML.sub("\ufffd", str(text))


def _detectors(report: Report) -> list[tuple[str, str]]:
    """(code, kind) of every detector: the registry when importable, else what the report shows."""
    seen: dict[str, str] = {}
    try:
        from stabdiag.detectors import DETECTORS

        for d in DETECTORS:
            seen.setdefault(d.kind, d.code)
    except ImportError:
        pass
    for item in (*report.findings, *report.skipped):
        seen.setdefault(item.kind, item.code)
    return [(code, kind) for kind, code in seen.items()]


def _steps(f: Finding) -> str:
    return at_steps(f.step_start, f.step_end) or "whole run"


def _where(f: Finding) -> str:
    """`` at step 120`` / `` at steps 120-180``; empty for a whole-run finding (no "at run")."""
    where = at_steps(f.step_start, f.step_end)
    return f" at {where}" if where else ""


def render_junit(
    report: Report, *, fail_on: Severity | None = Severity.ERROR, timestamp: str | None = None
) -> str:
    """The report as JUnit XML; ``fail_on=None`` (``--fail-on never``) never fails a testcase."""
    root = ET.Element("testsuites", name="stabdiag")
    detectors = _detectors(report)
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    # Grouped once: looking findings and skips up per run and detector was quadratic in the runs.
    by_case: dict[tuple[str, str], list[Finding]] = defaultdict(list)
    for f in report.findings:
        by_case[(f.run, f.kind)].append(f)
    skip_of: dict[tuple[str, str], str] = {}
    for s in report.skipped:
        skip_of.setdefault((s.run, s.kind), s.reason)
    for run in report.runs:
        suite = ET.SubElement(root, "testsuite", name=_x(run.name))
        if timestamp:
            suite.set("timestamp", timestamp)
        n = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        for code, kind in detectors:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=_x(f"stabdiag.{run.name}"),
                name=f"{code} {kind}",
                time="0",
            )
            n["tests"] += 1
            fs = by_case.get((run.name, kind), [])
            failing = [f for f in fs if fail_on is not None and f.severity >= fail_on]
            for f in failing:
                fail = ET.SubElement(
                    case,
                    "failure",
                    type=kind,
                    message=_x(f"{f.severity.label}{_where(f)}: {f.message}"),
                )
                fail.text = _x(
                    f"{f.code} {f.kind} {f.severity.label} {_steps(f)} metric={f.metric}\n"
                    f"{f.message}\nevidence: {json.dumps(f.evidence, default=str, allow_nan=True)}"
                )
            if failing:
                n["failures"] += 1
            quiet = [f for f in fs if f not in failing]
            if quiet:
                ET.SubElement(case, "system-out").text = _x(
                    "\n".join(f"{f.severity.label}{_where(f)}: {f.message}" for f in quiet)
                )
            if (run.name, kind) in skip_of:
                ET.SubElement(
                    case, "skipped", message=_x(f"not checked: {skip_of[(run.name, kind)]}")
                )
                n["skipped"] += 1
        for w in run.warnings:
            ET.SubElement(suite, "system-err").text = _x(f"input: {w}")
        for k, v in n.items():
            suite.set(k, str(v))
            totals[k] += v
    if report.errors:
        suite = ET.SubElement(
            root,
            "testsuite",
            name="stabdiag.inputs",
            tests=str(len(report.errors)),
            failures="0",
            errors=str(len(report.errors)),
            skipped="0",
        )
        for i, msg in enumerate(report.errors):
            case = ET.SubElement(
                suite, "testcase", classname="stabdiag.inputs", name=f"input {i + 1}"
            )
            ET.SubElement(case, "error", type="unreadable", message=_x(msg))
        totals["tests"] += len(report.errors)
        totals["errors"] += len(report.errors)
    for k, v in totals.items():
        root.set(k, str(v))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
