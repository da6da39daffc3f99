"""Renderers: pure functions from a result to text, in one registry. Only ``cli.py`` writes or
prints their output.

Every output format is an ``OutputFormat``; every renderer has one call signature,
``(subject, RenderOptions) -> str``; ``RENDERERS`` maps (subject kind, format) to it. A subject
is what a command produced: an analysis ``Report``, a baseline ``Comparison``, a ``SweepResult``
or a ``VerifyResult``. ``render(subject, fmt)`` finds the renderer from the subject's type, so a
command never chooses a renderer by hand, and a format a subject lacks is one clear error.
Renderer modules are imported on first use: rendering JSON must not import matplotlib.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stabdiag.errors import ConfigError


class OutputFormat(str, enum.Enum):
    """Every ``--format`` value of every command; which subject has which is in RENDERERS."""

    TEXT = "text"
    JSON = "json"
    MARKDOWN = "markdown"
    HTML = "html"
    JUNIT = "junit"
    GITHUB = "github"


FILE_WIDTH = 110
"""Columns of a text report written to a file (no terminal to measure)."""


@dataclass(frozen=True, kw_only=True)
class RenderOptions:
    """What a renderer may need beyond its subject; the defaults are the CLI's. A renderer reads
    the fields that concern its format and ignores the rest, so every call looks the same."""

    max_remedies: int = 5
    """Text report: remedies shown per run."""
    fail_on: str = "error"
    """JUnit: the level at which a finding fails its testcase (``never``: none does)."""
    plot_files: tuple[Path, ...] = ()
    """Markdown/HTML: the figures ``--plots`` wrote; each run's PNG is linked (Markdown) or
    embedded (HTML). Without them the HTML report draws its figures itself."""
    link_base: Path | None = None
    """Markdown: the directory image links are relative to (the report's; None: the working dir)."""
    generated: str | None = None
    """Markdown/HTML: the timestamp line; the caller injects it so output is reproducible."""
    jobs: int = 1
    """HTML: worker processes that draw the figures when ``plot_files`` has none."""
    progress: Callable[[int, int, str], None] | None = None
    """HTML: called ``(done, total, run)`` as each of those figures is drawn (the CLI's bar)."""
    width: int = FILE_WIDTH
    """Text: columns to lay tables out in."""
    color_system: str | None = None
    """Text: rich's colour system of the terminal it goes to (None: plain text, no escapes)."""


Renderer = Callable[[Any, RenderOptions], str]
"""One renderer: (subject, options) -> the whole output as a string."""

SUBJECTS: Mapping[str, str] = {
    "stabdiag.report.Report": "report",
    "stabdiag.compare.Comparison": "comparison",
    "stabdiag.sweep.results.SweepResult": "sweep",
    "stabdiag.verify.VerifyResult": "verify",
    "stabdiag.verify_proxy.ProxyResult": "verify-proxy",
}
"""The subject kind of each result type (by qualified name, so nothing is imported to look)."""

RENDERERS: dict[tuple[str, OutputFormat], Renderer] = {}
"""(subject kind, format) -> its renderer; filled below, once per renderer."""


def formats(kind: str) -> tuple[OutputFormat, ...]:
    """The formats a subject kind renders to, in OutputFormat order."""
    return tuple(f for f in OutputFormat if (kind, f) in RENDERERS)


def output_format(value: str | OutputFormat, kind: str = "report") -> OutputFormat:
    """``value`` as an OutputFormat that ``kind`` renders to; ConfigError naming the choices."""
    if isinstance(value, OutputFormat) and (kind, value) in RENDERERS:
        return value
    try:
        fmt = OutputFormat(value)
    except ValueError:
        fmt = None
    if fmt is None or (kind, fmt) not in RENDERERS:
        raise ConfigError(
            f"--format {str(getattr(value, 'value', value))!r}: expected one of "
            f"{', '.join(f.value for f in formats(kind))}"
        )
    return fmt


def renderer(kind: str, fmt: str | OutputFormat) -> Renderer:
    """The renderer of ``kind`` in ``fmt`` (ConfigError when the kind has no such format)."""
    return RENDERERS[(kind, output_format(fmt, kind))]


def subject_kind(subject: object) -> str:
    t = type(subject)
    kind = SUBJECTS.get(f"{t.__module__}.{t.__qualname__}")
    if kind is None:
        raise TypeError(
            f"nothing renders a {t.__qualname__}; expected one of {', '.join(SUBJECTS)}"
        )
    return kind


def render(subject: object, fmt: str | OutputFormat, options: RenderOptions | None = None) -> str:
    """``subject`` (any type in SUBJECTS) as ``fmt`` text."""
    return renderer(subject_kind(subject), fmt)(subject, options or RenderOptions())


def text_console(options: RenderOptions, file: Any) -> Any:  # noqa: ANN401 - rich Console
    """The console ``text_of`` prints on: ``options.width`` columns, writing to ``file``."""
    from rich.console import Console

    from stabdiag.console import THEME

    return Console(
        file=file,
        theme=THEME,
        width=options.width,
        highlight=False,
        soft_wrap=False,
        color_system=options.color_system,
        force_terminal=options.color_system is not None,
    )


def text_of(renderable: Any, options: RenderOptions) -> str:
    """A rich renderable as the text a console of ``options.width`` columns would print: plain,
    or with the ANSI escapes of ``options.color_system`` (NO_COLOR is honoured by rich)."""
    import io

    buf = io.StringIO()
    text_console(options, buf).print(renderable)
    return buf.getvalue()


def run_images(report: Any, plot_files: tuple[Path, ...]) -> dict[str, Path]:
    """Run name -> the PNG ``--plots`` wrote for it (matched by the file stem the plots use)."""
    if not plot_files:
        return {}
    from stabdiag.render.plots import plot_files as stems

    pngs = {p.stem: p for p in plot_files if p.suffix == ".png"}
    return {run: pngs[stem] for run, stem in stems(report).items() if stem in pngs}


def relative_links(images: Mapping[str, Path], base: Path | None) -> dict[str, str]:
    """Image paths as POSIX links relative to ``base`` (None: the working directory)."""
    root = (base or Path.cwd()).resolve()
    return {r: Path(os.path.relpath(p.resolve(), root)).as_posix() for r, p in images.items()}


def _registers(kind: str, fmt: OutputFormat) -> Callable[[Renderer], Renderer]:
    def add(fn: Renderer) -> Renderer:
        RENDERERS[(kind, fmt)] = fn
        return fn

    return add


# --- the analysis report ------------------------------------------------------------------------
# Each renderer module keeps its own keyword arguments; these adapters give them one signature and
# import them on use.


@_registers("report", OutputFormat.TEXT)
def _report_text(report: Any, o: RenderOptions) -> str:
    from stabdiag.render.terminal import render_text

    return render_text(report, o)  # = text_of(render_terminal(report, ...), o), faster


@_registers("report", OutputFormat.JSON)
def _report_json(report: Any, o: RenderOptions) -> str:
    from stabdiag.render.json import render_json

    return render_json(report)


@_registers("report", OutputFormat.MARKDOWN)
def _report_markdown(report: Any, o: RenderOptions) -> str:
    from stabdiag.render.markdown import render_markdown

    links = relative_links(run_images(report, o.plot_files), o.link_base)
    return render_markdown(report, images=links, generated=o.generated)


@_registers("report", OutputFormat.HTML)
def _report_html(report: Any, o: RenderOptions) -> str:
    from stabdiag.render.html import render_html

    images = {r: p.read_bytes() for r, p in run_images(report, o.plot_files).items()}
    return render_html(
        report,
        images=images or None,
        plots=True,
        generated=o.generated,
        jobs=o.jobs,
        progress=o.progress,
    )


@_registers("report", OutputFormat.JUNIT)
def _report_junit(report: Any, o: RenderOptions) -> str:
    from stabdiag.render.junit import render_junit
    from stabdiag.textfmt import parse_fail_on

    return render_junit(report, fail_on=parse_fail_on(o.fail_on))


@_registers("report", OutputFormat.GITHUB)
def _report_github(report: Any, o: RenderOptions) -> str:
    from stabdiag.render.github import render_github

    return render_github(report)


# --- baseline comparison, LR sweep, verify ------------------------------------------------------


@_registers("comparison", OutputFormat.TEXT)
def _comparison_text(c: Any, o: RenderOptions) -> str:
    from stabdiag.render.compare import render_comparison_text

    return render_comparison_text(c)


@_registers("comparison", OutputFormat.JSON)
def _comparison_json(c: Any, o: RenderOptions) -> str:
    from stabdiag.render.compare import render_comparison_json

    return render_comparison_json(c)


@_registers("sweep", OutputFormat.TEXT)
def _sweep_text(result: Any, o: RenderOptions) -> str:
    from stabdiag.render.sweep import render_sweep_text

    return text_of(render_sweep_text(result), o)


@_registers("sweep", OutputFormat.JSON)
def _sweep_json(result: Any, o: RenderOptions) -> str:
    from stabdiag.render.sweep import render_sweep_json

    return render_sweep_json(result)


@_registers("sweep", OutputFormat.MARKDOWN)
def _sweep_markdown(result: Any, o: RenderOptions) -> str:
    from stabdiag.render.sweep import render_sweep_markdown

    png = next((p for p in result.plots if p.endswith(".png")), None)
    return render_sweep_markdown(result, image=png)


@_registers("verify", OutputFormat.TEXT)
def _verify_text(result: Any, o: RenderOptions) -> str:
    from stabdiag.render.verify import render_text

    return render_text(result)


@_registers("verify", OutputFormat.JSON)
def _verify_json(result: Any, o: RenderOptions) -> str:
    from stabdiag.render.verify import render_json

    return render_json(result)


@_registers("verify", OutputFormat.MARKDOWN)
def _verify_markdown(result: Any, o: RenderOptions) -> str:
    from stabdiag.render.verify import render_markdown

    return render_markdown(result)


@_registers("verify-proxy", OutputFormat.TEXT)
def _proxy_text(result: Any, o: RenderOptions) -> str:
    from stabdiag.verify_proxy import render_proxy_text

    return render_proxy_text(result)


@_registers("verify-proxy", OutputFormat.JSON)
def _proxy_json(result: Any, o: RenderOptions) -> str:
    from stabdiag.render.json import strict_json

    return strict_json(result.to_dict())


@_registers("verify-proxy", OutputFormat.MARKDOWN)
def _proxy_markdown(result: Any, o: RenderOptions) -> str:
    from stabdiag.verify_proxy import render_proxy_markdown

    return render_proxy_markdown(result)


class RunIndex:
    """A report's findings, skips and remedies grouped by run once.

    Renderers ask for "this run's findings" once per run; filtering the whole report each time
    made Markdown and HTML quadratic in the number of runs (500 runs: minutes). ``of`` keeps the
    index of the last report it was asked about, so the helpers of one render share it.
    """

    _last: tuple[object, RunIndex] | None = None

    def __init__(self, report) -> None:  # noqa: ANN001 - stabdiag.report.Report (import cycle)
        from collections import defaultdict

        self.findings: dict[str, list] = defaultdict(list)
        self.skipped: dict[str, list] = defaultdict(list)
        self.remedies: dict[str, list] = defaultdict(list)
        for f in report.findings:
            self.findings[f.run].append(f)
        for s in report.skipped:
            self.skipped[s.run].append(s)
        for r in report.remedies:
            self.remedies[r.run].append(r)
        self.judged = frozenset(report.judged_runs())
        self.worst = {run: max(f.severity for f in fs) for run, fs in self.findings.items()}

    @classmethod
    def of(cls, report) -> RunIndex:  # noqa: ANN001
        last = cls._last
        if last is None or last[0] is not report:
            last = cls._last = (report, cls(report))
        return last[1]
