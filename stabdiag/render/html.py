"""The HTML report: one self-contained file a CI job can upload as an artifact.

Self-contained means no network at all: CSS is inline and plots are base64 PNGs in ``<img>``
tags (an inline SVG would carry the run's strings into markup; a PNG cannot). Every string from
a log goes through ``html.escape``; the page has no scripts, so a hostile run name can at worst
print as text.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from html import escape

from stabdiag import words
from stabdiag.findings import Finding
from stabdiag.render import RunIndex
from stabdiag.render.markdown import steps_of, verdict
from stabdiag.render.notchecked import group
from stabdiag.render.terminal import by_path
from stabdiag.report import Report, RunSummary, counts
from stabdiag.textfmt import EN_DASH, at_steps, step_span

CSS = """
:root { --err:#c0392b; --warn:#b7791f; --info:#2b6cb0; --ok:#2f855a; --mute:#666; }
* { box-sizing: border-box; }
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color:#1a1a1a;
       margin: 0 auto; padding: 24px; max-width: 1280px; background:#fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 6px; }
h3 { font-size: 14px; margin: 14px 0 4px; }
.meta, .mute { color: var(--mute); } .mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
table { border-collapse: collapse; width: 100%; margin: 8px 0; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #e5e5e5; vertical-align: top;
         overflow-wrap: anywhere; }
th { background: #f6f6f6; font-weight: 600; white-space: nowrap; }
.sev { font-weight: 600; white-space: nowrap; } td.mono { white-space: nowrap; overflow-wrap: normal; }
.error { color: var(--err); } .warning { color: var(--warn); } .info { color: var(--info); }
.ok { color: var(--ok); }
.badge { display:inline-block; padding: 1px 8px; border-radius: 10px; color:#fff; font-size: 12px; }
.badge.error { background: var(--err); color:#fff; } .badge.warning { background: var(--warn); color:#fff; }
.badge.info { background: var(--info); color:#fff; } .badge.ok { background: var(--ok); color:#fff; }
.badge.none { background: #888; }
.run { border-top: 3px solid #ddd; margin-top: 28px; padding-top: 4px; }
.run-error { border-color: var(--err); } .run-warning { border-color: var(--warn); }
.warnbox { background: #fff8e6; border-left: 4px solid var(--warn); padding: 6px 10px; margin: 6px 0; }
img.plot { width: 100%; max-width: 1210px; border: 1px solid #eee; margin-top: 8px; }
ol li { margin-bottom: 6px; } .why { color: var(--mute); font-size: 13px; }
"""


def e(text: object) -> str:
    return escape(str(text), quote=True)


def _finding_row(f: Finding) -> str:
    sev = f.severity.label
    return (
        f'<tr><td class="sev {sev}">{sev}</td><td class="mono">{e(f.code)}</td>'
        f'<td>{e(f.kind)}</td><td class="mono">{e(steps_of(f))}</td><td>{e(f.message)}</td></tr>'
    )


def _badge(report: Report, run: RunSummary) -> str:
    ix = RunIndex.of(report)
    if run.name not in ix.judged:
        return '<span class="badge none">not judged</span>'
    worst = ix.worst.get(run.name)
    cls = worst.label if worst else "ok"
    return f'<span class="badge {cls}">{e(verdict(report, run))}</span>'


def _run_section(report: Report, run: RunSummary, image: bytes | None) -> str:
    ix = RunIndex.of(report)
    worst = ix.worst.get(run.name)
    parts = [
        f'<section class="run run-{worst.label if worst else "ok"}">',
        f"<h2>{e(run.name)} {_badge(report, run)}</h2>",
        f'<div class="meta">{e(run.format)} · <span class="mono">{e(run.path)}</span>'
        + (f" · {at_steps(*run.steps, dash=EN_DASH)}" if run.steps else "")
        + f" · {words.count(len(run.metrics), 'metric')}</div>",
    ]
    if run.config_line():
        parts.append(f'<div class="meta">configured: {e(run.config_line())}</div>')
    parts += [f'<div class="warnbox">input: {e(w)}</div>' for w in run.warnings]
    d = run.diagnosis
    if d is not None and d.cause != "healthy":
        parts.append(
            f"<p><strong>Diagnosis</strong> ({e(d.confidence)} confidence): {e(d.statement)}</p>"
        )
    if image:
        b64 = base64.b64encode(image).decode("ascii")
        parts.append(
            f'<img class="plot" alt="stability plot of {e(run.name)}" '
            f'src="data:image/png;base64,{b64}">'
        )
    fs = ix.findings.get(run.name, [])
    if fs:
        parts += [
            "<h3>Findings</h3>",
            "<table><thead><tr><th>severity</th><th>code</th><th>kind</th>"
            "<th>steps</th><th>finding</th></tr></thead><tbody>",
            *(_finding_row(f) for f in fs),
            "</tbody></table>",
        ]
    rems = ix.remedies.get(run.name, [])
    if rems:
        parts.append("<h3>What to change</h3><ol>")
        for r in rems:
            addr = (
                f' <span class="mute">(addresses: {e(", ".join(r.addresses))})</span>'
                if r.addresses
                else ""
            )
            acts = "".join(f"<li>{e(a)}</li>" for a in r.actions)
            refs = f"<br>Sources: {e('; '.join(r.references))}" if r.references else ""
            refs += f"<br>Watch: {e(r.watch)}" if r.watch else ""
            parts.append(
                f"<li><strong>{e(r.title)}</strong>{addr}<ul>{acts}</ul>"
                f'<div class="why">{e(r.why)}{refs}</div></li>'
            )
        parts.append("</ol>")
    skipped = ix.skipped.get(run.name, [])
    if skipped:
        parts.append(f"<details><summary>Not checked ({len(skipped)})</summary><ul>")
        # One item per true reason (render/notchecked.py), as in the text and Markdown reports.
        parts += [
            f"<li>{e(', '.join(nc.kinds))}: {e(nc.reason)}</li>"
            for nc in group(skipped, run.metrics)
        ]
        parts.append("</ul></details>")
    parts.append("</section>")
    return "\n".join(parts)


Progress = Callable[[int, int, str], None]
"""``progress(done, total, run)`` after each run's figure is drawn (as in stabdiag.render.plots)."""


def render_html(
    report: Report,
    *,
    images: Mapping[str, bytes] | None = None,
    plots: bool = False,
    generated: str | None = None,
    jobs: int = 1,
    progress: Progress | None = None,
) -> str:
    """The report as one HTML page.

    ``images`` maps run name -> PNG bytes. With ``plots=True`` and no ``images``, the figures are
    drawn here from the report's series (matplotlib is imported only then), in ``jobs`` worker
    processes, calling ``progress(done, total, run)`` as each run is drawn.
    """
    if images is None and plots and (report.series or report.table is not None):
        from stabdiag.render.plots import render_runs, run_images

        images = run_images(render_runs(report, ("png",), jobs=jobs, progress=progress))
    images = images or {}
    c = counts(report.findings)
    runs = by_path(report.runs)
    title = f"stabdiag report: {words.count(len(runs), 'run')}"
    order = "<p>Runs are listed by path.</p>\n" if len(runs) > 1 else ""
    summary_rows = "".join(
        f"<tr><td>{e(r.name)}</td><td>{e(r.format)}</td>"
        f"<td>{step_span(*r.steps, dash=EN_DASH) if r.steps else EN_DASH}</td><td>{_badge(report, r)}</td></tr>"
        for r in runs
    )
    errors = "".join(f'<div class="warnbox">unreadable: {e(x)}</div>' for x in report.errors)
    meta = f"stabdiag {e(report.version)}" + (f" · generated {e(generated)}" if generated else "")
    body = "\n".join(_run_section(report, r, images.get(r.name)) for r in runs)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>{e(title)}</title>
<style>{CSS}</style>
</head>
<body>
<h1>{e(title)}</h1>
<div class="meta">{meta}</div>
<p><span class="sev error">{words.count(c["error"], "error")}</span> · <span class="sev warning">{words.count(c["warning"], "warning")}</span>
 · <span class="sev info">{words.count(c["info"], "info")}</span></p>
{order}{errors}
<table><thead><tr><th>run</th><th>format</th><th>steps</th><th>verdict</th></tr></thead>
<tbody>{summary_rows}</tbody></table>
{body}
</body>
</html>
"""
