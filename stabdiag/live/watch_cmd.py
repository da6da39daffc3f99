"""The CLI edge of ``stabdiag watch``: the poll loop, printing, ``--on-finding``, exit codes.

Kept out of cli.py (which only declares the options) so that the command's behaviour sits next
to the library it drives. Exit codes: 1 as soon as a finding at or above ``--fail-on`` appears;
when the runs end (no new data for ``--idle-timeout``, or ``--pid`` exited) a final check of
everything read, then 1 or 0; Ctrl-C stops with the verdict so far (1 or 0), never a traceback.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stabdiag import words
from stabdiag.findings import Severity
from stabdiag.live.state import Event
from stabdiag.live.watch import PollResult, Watcher, pid_alive
from stabdiag.textfmt import at_steps, parse_fail_on

FORMATS = ("text", "json", "jsonl", "github")
_GH_LEVEL = {"error": "error", "warning": "warning", "info": "notice"}


@dataclass(frozen=True)
class Options:
    """Everything ``stabdiag watch`` was asked to do: what to follow, how often, when to stop,
    what to print and what to run on a finding."""

    paths: tuple[Path, ...]
    fail_on: str = "error"
    interval: float = 2.0
    idle_timeout: float = 600.0
    pid: int | None = None
    on_finding: str | None = None
    fmt: str = "text"
    min_severity: str = "info"
    input_format: str | None = None
    select: list[str] | None = None
    ignore: list[str] | None = None
    configs: dict[str, Any] | None = None
    budget: float = 0.05


def run(opts: Options, out: Any, err: Any) -> int:
    """Watch until the runs end; return the exit code. ``out``/``err``: rich consoles."""
    watcher = Watcher(
        opts.paths,
        fmt=opts.input_format,
        select=opts.select,
        ignore=opts.ignore,
        configs=opts.configs,
        budget=opts.budget,
    )
    fail = parse_fail_on(opts.fail_on)
    shown = Severity.parse(opts.min_severity)
    status = err.status("watching", spinner="dots") if err.is_terminal else None
    reason = "the runs ended"
    code = 0
    try:
        if status is not None:
            status.start()
        while True:
            res = watcher.poll()
            if _report(res, watcher, opts, out, err, shown, fail):
                code, reason = 1, f"a finding at or above --fail-on {opts.fail_on}"
                break
            idle = time.monotonic() - watcher.last_data
            if opts.pid is not None and not pid_alive(opts.pid):
                reason = f"process {opts.pid} exited"
            elif opts.idle_timeout and idle >= opts.idle_timeout:
                reason = f"no new data for {opts.idle_timeout:g} s"
            else:
                if status is not None:
                    status.update(_status_text(watcher, idle))
                time.sleep(opts.interval)
                continue
            res = watcher.finish()
            code = 1 if _report(res, watcher, opts, out, err, shown, fail) else 0
            break
    except KeyboardInterrupt:
        reason = "interrupted"
        worst = watcher.tracker.worst()
        code = 1 if fail is not None and worst is not None and worst >= fail else 0
    finally:
        if status is not None:
            status.stop()
        watcher.close()
    if opts.fmt == "json":
        from stabdiag.render.json import render_json

        out.file.write(render_json(_report_object(watcher)))
        out.file.flush()
    _summary(watcher, reason, err)
    return code


def _report(
    res: PollResult,
    w: Watcher,
    opts: Options,
    out: Any,
    err: Any,
    shown: Severity,
    fail: Severity | None,
) -> bool:
    """Print warnings and findings of one poll; True when one is at or above ``fail``."""
    from rich.markup import escape

    for msg in res.warnings:
        err.print(f"[warning]warning:[/warning] {escape(msg)}", highlight=False, soft_wrap=True)
    hit = False
    for e in res.events:
        f = e.finding
        if f.severity >= shown:
            _print_event(e, opts.fmt, out)
            if opts.on_finding:
                _notify(opts.on_finding, e, err)
        if fail is not None and f.severity >= fail:
            hit = True
    return hit


def _print_event(e: Event, fmt: str, out: Any) -> None:
    f = e.finding
    if fmt == "json":
        return  # one report at the end
    if fmt == "jsonl":
        out.file.write(json.dumps(e.to_dict(), sort_keys=True) + "\n")
        out.file.flush()
        return
    where = f" at {at}" if (at := at_steps(f.step_start, f.step_end)) else ""
    if fmt == "github":
        from stabdiag.render.github import command

        out.file.write(
            command(
                _GH_LEVEL[f.severity.label],
                f"{f.run}: {f.message}",
                title=f"stabdiag {f.code} {f.kind}{where}",
            )
            + "\n"
        )
        out.file.flush()
        return
    from rich.text import Text

    from stabdiag.console import SEVERITY_STYLE

    line = Text(time.strftime("%H:%M:%S "), style="dim")
    line.append(f"{f.severity.label:<7}", style=SEVERITY_STYLE[f.severity.label])
    line.append(f" {f.run}: {f.kind} ({f.code}){where}")
    if e.change == "escalated":
        line.append(" (now " + f.severity.label + ")", style=SEVERITY_STYLE[f.severity.label])
    line.append(f": {f.message}")
    out.print(line, soft_wrap=True)


def _notify(cmd: str, e: Event, err: Any) -> None:
    """Run the user's command with the finding as JSON on stdin (their Slack/webhook script).

    The command line is split as a shell would split it but run without a shell (stabdiag
    never starts one): pipes or redirections need an explicit ``sh -c '...'``."""
    from rich.markup import escape

    try:
        argv = shlex.split(cmd)
        if not argv:
            raise ValueError("empty command")
        p = subprocess.run(
            argv,
            input=json.dumps(e.to_dict()) + "\n",
            text=True,
            capture_output=True,
            timeout=60,
        )
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        err.print(
            f"[warning]warning:[/warning] --on-finding {escape(cmd)}: {escape(str(exc))}",
            highlight=False,
            soft_wrap=True,
        )
        return
    if p.returncode != 0:
        tail = (p.stderr or "").strip().splitlines()[-1:] or [""]
        err.print(
            f"[warning]warning:[/warning] --on-finding {escape(cmd)} exited {p.returncode}"
            f"{': ' + escape(tail[0]) if tail[0] else ''}",
            highlight=False,
            soft_wrap=True,
        )


def _status_text(w: Watcher, idle: float) -> str:
    worst = w.tracker.worst()
    return (
        f"watching {words.count(len(w.followers), 'file')}, {words.count(len(w.runs), 'run')}, "
        f"{w.points:,} {words.plural('point', w.points)}; last data {idle:.0f} s ago; "
        f"{words.count(len(w.findings), 'finding')}"
        + (f", worst {worst.label}" if worst is not None else "")
    )


def _summary(w: Watcher, reason: str, err: Any) -> None:
    worst = w.tracker.worst()
    err.print(
        f"watch ended ({reason}): {words.count(len(w.runs), 'run')}, {w.points:,} {words.plural('point', w.points)}, "
        f"{words.count(len(w.findings), 'finding')}"
        + (f", worst {worst.label}" if worst is not None else ""),
        highlight=False,
        soft_wrap=True,
    )


def _report_object(w: Watcher) -> Any:
    """The verdict so far as a Report (the `analyze --format json` contract)."""
    from stabdiag import __version__
    from stabdiag.diagnose import summarize
    from stabdiag.remedies import suggest
    from stabdiag.report import Report
    from stabdiag.sources import RunInfo

    data = {d.name: d for d in w.run_data()}
    paths: dict[str, tuple[str, str]] = {}
    for f in w.followers.values():
        for name in data:
            if name == f.name or name.startswith(f.name + "/"):
                paths.setdefault(name, (str(f.path), f.fmt))
    findings, skipped = w.findings, w.skipped
    runs = tuple(
        summarize(
            RunInfo(name=n, path=paths.get(n, ("", ""))[0], format=paths.get(n, ("", ""))[1]),
            d,
            findings=findings,
            skipped=skipped,
        )
        for n, d in data.items()
    )
    return Report(
        runs=runs,
        findings=tuple(findings),
        skipped=tuple(skipped),
        remedies=tuple(suggest(findings, data)),
        version=__version__,
    )
