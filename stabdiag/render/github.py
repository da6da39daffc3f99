"""GitHub Actions workflow commands: findings become annotations on the job and the PR checks tab.

Escaping follows GitHub's runner (``toolkit/packages/core/src/command.ts``): in the message,
``%`` -> ``%25``, ``\\r`` -> ``%0D``, ``\\n`` -> ``%0A``; in property values additionally ``:`` ->
``%3A`` and ``,`` -> ``%2C``. Without it, a run name containing ``::`` or a newline could end the
command early or forge a second one.
"""

from __future__ import annotations

from stabdiag.findings import Finding, Severity
from stabdiag.report import Report
from stabdiag.textfmt import at_steps

LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


_OTHER_BREAKS = str.maketrans(
    {
        "\v": "%0B",
        "\f": "%0C",
        "\x85": "%C2%85",
        "\u2028": "%E2%80%A8",
        "\u2029": "%E2%80%A9",
        "\x1c": "%1C",
        "\x1d": "%1D",
        "\x1e": "%1E",
    }
)


def escape_data(text: object) -> str:
    """GitHub's escapes, plus every other character Python or a log viewer treats as a line
    break (VT, FF, NEL, U+2028/9, FS/GS/RS): none can split a command across lines."""
    s = str(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return s.translate(_OTHER_BREAKS)


def escape_property(text: object) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(level: str, message: str, **props: str) -> str:
    """One workflow command line, e.g. ``::error title=SD101 loss-spike::loss rose...``."""
    p = ",".join(f"{k}={escape_property(v)}" for k, v in props.items())
    return f"::{level}{' ' + p if p else ''}::{escape_data(message)}"


def _where(f: Finding) -> str:
    where = at_steps(f.step_start, f.step_end)
    return f" at {where}" if where else ""


def render_github(report: Report, *, min_severity: Severity = Severity.INFO) -> str:
    """One annotation per finding at or above ``min_severity``, one warning per unreadable input."""
    lines = []
    for f in report.findings:
        if f.severity < min_severity:
            continue
        lines.append(
            command(
                LEVEL[f.severity],
                f"{f.run}{_where(f)}: {f.message}",
                title=f"stabdiag {f.code} {f.kind} ({f.run})",
            )
        )
    judged = set(report.judged_runs())
    for r in report.runs:
        if r.name not in judged:
            why = r.judged_reason or "not judged: no loss series found"  # the run's own reason
            lines.append(
                command(
                    "warning",
                    f"{r.name} ({r.path}): {why}",
                    title=f"stabdiag not judged ({r.name})",
                )
            )
        lines += [
            command("warning", f"{r.name}: {w}", title=f"stabdiag input warning ({r.name})")
            for w in r.warnings
        ]
    lines += [command("warning", e, title="stabdiag unreadable input") for e in report.errors]
    return "\n".join(lines) + ("\n" if lines else "")
