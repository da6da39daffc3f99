"""The terminal report: a summary line per run, its findings table, what was not checked, remedies.

Every line that can run past the width is a hanging indent: its continuation lines start under
its first word ("- lower the peak LR ...", the text after "watch: "), on a terminal and in a CI
log alike, so a wrapped remedy never lands at column 0 among the run headers. Lines carry no
trailing blanks (rich pads table cells to their column width; a log or a diff shows them).

Each line is described once (``Styled`` pieces) and laid out two ways with the same bytes: by
rich (``render_terminal``: a renderable, for any console) or, for the report ``render_text``
writes, by the fast path of ``_Layout``, which wraps and styles lines of ordinary characters
itself. Through rich, Text objects, word division and segments cost a clean run's four or five
lines 0.3-0.7 ms: 100,000 small logs spent 30-70 s printing their report; laid out here, 0.05
ms. Lines the fast path is not sure to lay out exactly as rich does (wide or zero-width
characters, tabs, controls, a lead wider than the line) go through rich.
"""

from __future__ import annotations

import io
import shlex
import unicodedata
from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

from rich._wrap import divide_line  # rich's own word division: the fast path must break alike
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.segment import Segment
from rich.style import Style
from rich.text import Text

from stabdiag.console import SEVERITY_STYLE
from stabdiag.findings import Finding, Severity
from stabdiag.render import RunIndex
from stabdiag.render.notchecked import group
from stabdiag.report import Report, RunSummary, counts
from stabdiag.table import TRAIN_LOSS
from stabdiag.textfmt import at_steps, step_span
from stabdiag.words import count, tally

if TYPE_CHECKING:
    from stabdiag.render import RenderOptions

MARK = {"error": "✘", "warning": "!", "info": "·", None: "✔"}


def _steps(f: Finding) -> str:
    return step_span(f.step_start, f.step_end)


class Styled(NamedTuple):
    """A line's text as rich builds it: ``Text(style=base)``, then each ``(text, style)`` of
    ``parts`` appended. Plain data, so the fast path can lay it out (and remember the layout of
    a line every run repeats) without building rich objects."""

    base: str
    parts: tuple[tuple[str, str], ...]

    @property
    def plain(self) -> str:
        return "".join(p for p, _ in self.parts)

    def text(self) -> Text:
        t = Text(style=self.base)
        for p, s in self.parts:
            t.append(p, s)
        return t

    def spans(self, at: int = 0, *, base: bool = True) -> list[tuple[int, int, str]]:
        """(start, end, style) from offset ``at``, in the order rich renders them: the base style
        first (Text.append and Text.join make it a span over the whole text), then each part."""
        out = []
        if base and self.base:
            out.append((at, at + len(self.plain), self.base))
        for p, s in self.parts:
            if p and s:
                out.append((at, at + len(p), s))
            at += len(p)
        return out


def styled(text: str, style: str = "") -> Styled:
    """``Text(text, style=style)`` as ``Styled``."""
    return Styled(style, ((text, ""),))


class _Line:
    """One line that rich wraps at the width, no hanging indent (the header, a blank line)."""

    def __init__(self, line: Styled) -> None:
        self.line = line

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.line.text()


BLANK = _Line(Styled("", ()))


class _Hang:
    """``lead`` then ``body``; the lines ``body`` wraps onto start under its first character.

    ``lead`` is the indent and label ("  input: ", "     - "); it never wraps. A lead longer
    than a third of the width would leave a narrow ribbon of text, so there (unless ``keep``)
    the continuation lines start two columns in from the lead's indent instead. Lines end at
    their last character: no blanks padded to the width for a log or a diff to show."""

    def __init__(self, lead: Styled, body: Styled, *, keep: bool = False) -> None:
        self.lead, self.body, self.keep = lead, body, keep

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        # Wrapped here rather than laid out as rich Tables: a Table per line made the report of
        # 500 runs twice as slow to print. _Layout.hang does the same for ordinary characters.
        lead, body, width = self.lead.text(), self.body.text(), options.max_width
        n = lead.cell_len
        if not self.keep and n > width // 3:
            indent = n - len(lead.plain.lstrip(" "))
            body = lead[indent:] + body
            first, pad = Text(" " * indent), " " * (indent + 2)
        else:
            first, pad = lead, " " * n
        lines = body.wrap(console, max(width - len(pad), 8), overflow="fold")
        for i, line in enumerate(lines):
            line.rstrip()
            row = Text()  # each part's own style becomes a span: Text.render drops a base style
            row.append(first if i == 0 else pad)
            row.append(line)
            yield from row.render(console)
            yield Segment.line()


def hang(lead: str, body: Styled | str, *, style: str = "", lead_style: str | None = None) -> _Hang:
    """A line whose continuation lines keep its indentation (see ``_Hang``)."""
    return _Hang(
        styled(lead, style if lead_style is None else lead_style),
        body if isinstance(body, Styled) else styled(body, style),
    )


def _ordinary() -> frozenset[str]:
    """Characters the fast path lays out: printable, one cell wide for rich, not combining, and
    no whitespace but the space (rich and str.rstrip would treat other blanks as break points)."""
    ranges = ((0x21, 0x7E), (0xA1, 0x2FF), (0x370, 0x482), (0x2010, 0x2027), (0x2030, 0x205E))
    ranges += ((0x2190, 0x22FF), (0x2500, 0x25FC), (0x2700, 0x27BF))
    chars = (chr(c) for lo, hi in ranges for c in range(lo, hi + 1))
    return frozenset(
        [" "]
        + [
            c
            for c in chars
            if c.isprintable()
            and not c.isspace()
            and not unicodedata.combining(c)
            and cell_len(c) == 1
        ]
    )


class _Layout:
    """Lays out ``_Line`` and ``_Hang`` parts exactly as rich would print them on ``console``,
    for lines of ordinary characters (``_ordinary``); ``None`` for a part it leaves to rich.

    The same steps as rich, on strings: rich's ``divide_line`` breaks the body, each line is
    cut as ``Text.wrap`` and ``_Hang`` cut it (trailing blanks past the width, then all), and
    each run of characters under the same spans is one segment wrapped in that style's escape
    codes, which rich itself renders once per style. Off a terminal a line is its characters."""

    ORDINARY = _ordinary()
    MEMO = 4096  # lines remembered (every run repeats its "not checked" lines)

    def __init__(self, console: Console) -> None:
        self.console = console
        self.width = console.options.max_width
        self.plain = console.color_system is None
        self._codes: dict[tuple[str, ...], tuple[str, str] | None] = {}
        self._memo: dict[tuple, str | None] = {}

    def part(self, part: object) -> str | None:
        """``part`` as the text rich would print, or None when rich must lay it out."""
        if type(part) is _Line:
            key = (part.line,)
        elif type(part) is _Hang:
            key = (part.lead, part.body, part.keep)
        else:
            return None
        memo = self._memo
        if key in memo:
            return memo[key]
        if len(memo) >= self.MEMO:
            memo.clear()
        out = memo[key] = self.line(part.line) if len(key) == 1 else self.hang(*key)
        return out

    def line(self, s: Styled) -> str | None:
        p = s.plain
        if len(p) > self.width or not self.ORDINARY.issuperset(p):
            return None  # rich wraps it (or measures what we do not)
        return p + "\n" if self.plain else self._styled(p, s.spans()) + "\n"

    def hang(self, lead: Styled, body: Styled, keep: bool) -> str | None:
        width, ordinary = self.width, self.ORDINARY
        lp, bp = lead.plain, body.plain
        if not (ordinary.issuperset(lp) and ordinary.issuperset(bp)):
            return None
        n = len(lp)
        if not keep and n > width // 3:  # as _Hang: the label joins the body, lines go 2 in
            indent = n - len(lp.lstrip(" "))
            text = lp[indent:] + bp
            spans = [(0, len(text), lead.base)] if lead.base and not self.plain else []
            if not self.plain:
                rest = n - indent
                spans += [
                    (max(a, 0), min(b, rest), st)
                    for a, b, st in lead.spans(-indent, base=False)
                    if min(b, rest) > max(a, 0)
                ]
                spans += body.spans(rest)
            first, first_spans, padw = " " * indent, [], indent + 2
        else:
            text, first, padw = bp, lp, n
            spans = [] if self.plain else body.spans()
            first_spans = [] if self.plain else lead.spans()
        wrap = max(width - padw, 8)
        if padw + wrap > width:
            return None  # rich would crop these lines at the width
        # a body that fits needs no division (rich's divide_line breaks only past the width)
        breaks = divide_line(text, wrap, fold=True) if len(text) > wrap else []
        cuts = [0, *breaks, len(text)]
        pad, out = " " * padw, []
        for i in range(len(cuts) - 1):
            a = cuts[i]
            seg = text[a : cuts[i + 1]]
            if len(seg) > wrap:  # Text.wrap: blanks past the width go, then what still overflows
                blanks = len(seg) - len(seg.rstrip(" "))
                seg = seg[: len(seg) - min(blanks, len(seg) - wrap)][:wrap]
            seg = seg.rstrip()
            head = first if i == 0 else pad
            if self.plain:
                out.append(head + seg + "\n")
                continue
            off, end = len(head) - a, a + len(seg)
            row = (first_spans if i == 0 else []) + [
                (max(s, a) + off, min(e, end) + off, st)
                for s, e, st in spans
                if min(e, end) > max(s, a)
            ]
            out.append(self._styled(head + seg, row) + "\n")
        return "".join(out)

    def _styled(self, text: str, spans: list[tuple[int, int, str]]) -> str:
        """``text`` as rich renders it: one segment per stretch under the same spans."""
        if not spans:
            return text
        cuts = sorted({0, len(text), *(s for s, _, _ in spans), *(e for _, e, _ in spans)})
        out = []
        for a, b in zip(cuts, cuts[1:], strict=False):
            key = tuple(st for s, e, st in spans if s <= a < e)
            codes = self._codes.get(key, False)
            if codes is False:
                codes = self._codes[key] = self._escape(key)
            out.append(text[a:b] if codes is None else codes[0] + text[a:b] + codes[1])
        return "".join(out)

    def _escape(self, key: tuple[str, ...]) -> tuple[str, str] | None:
        """The escape codes around a stretch under ``key``'s styles, as the console prints them
        (its colour system, NO_COLOR): the styles combined in span order, as Text.render does."""
        if not key:
            return None
        con = self.console
        style = Style.combine([con.get_style(s, default=Style.null()) for s in ("", *key)])
        with con.capture() as cap:
            con.print(Text("x", style=style), end="")
        before, _, after = cap.get().partition("x")
        return (before, after) if before or after else None


def _verdict(report: Report, run: RunSummary, ix: RunIndex) -> _Hang:
    worst = ix.worst.get(run.name)
    judged = report.has_loss(run.name)
    label = worst.label if worst else None
    mark = MARK[label] if run.judged else "?"  # never a tick on a run nothing was said about
    steps = at_steps(*run.steps) if run.steps else "no steps"
    line = [
        (run.name, "bold"),
        (f"  {run.format}, {steps}, {count(len(run.metrics), 'metric')}  ", "dim"),
    ]
    if not run.judged:
        line.append((run.judged_reason or "not judged: no loss series", "warning"))
    elif worst is not None:
        if (
            not judged
            and run.loss is None
            and not run.judged_reason.startswith("judged as an RL run")
        ):
            line.append(("no loss series; ", "warning"))
        line.append(
            (tally(counts(ix.findings.get(run.name, []))), SEVERITY_STYLE.get(label or "", ""))
        )
    else:
        line.append(("healthy: no findings", "ok"))
    return hang(
        f"{mark} ",
        Styled("", tuple(line)),
        lead_style=SEVERITY_STYLE.get(label or "", "ok" if run.judged else "warning"),
    )


class _Findings:
    """A run's findings as a table whose message column wraps under itself; where the width
    leaves that column under ``MIN_MESSAGE`` columns, each finding is a heading line with its
    message hanging below it instead."""

    MIN_MESSAGE = 36
    HEAD = ("severity", "kind", "steps")

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self.parts(options.max_width)

    def parts(self, width: int) -> list[_Line | _Hang]:
        """The lines at ``width`` columns."""
        fs = self.findings
        cols = [(f.severity.label, f.kind, _steps(f)) for f in fs]
        w = [max(len(h), *(len(c[i]) for c in cols)) for i, h in enumerate(self.HEAD)]
        if width - (2 + sum(w) + 6) < self.MIN_MESSAGE:
            out: list[_Line | _Hang] = []
            for f in fs:
                label = f.severity.label
                rest = f"  {f.kind}  {at_steps(f.step_start, f.step_end)}".rstrip()
                head = Styled(SEVERITY_STYLE[label], ((label, ""), (rest, "")))
                out.append(_Hang(styled("  "), head))
                out.append(hang("    ", styled(f.message)))
            return out
        out = [
            _Line(
                styled(
                    f"  {'severity':<{w[0]}}  {'kind':<{w[1]}}  {'steps':>{w[2]}}  finding",
                    "bold",
                )
            )
        ]
        for f, (sev, kind, steps) in zip(fs, cols, strict=True):
            lead = Styled(
                "",
                (
                    ("  ", ""),
                    (f"{sev:<{w[0]}}", SEVERITY_STYLE[sev]),
                    (f"  {kind:<{w[1]}}  {steps:>{w[2]}}  ", ""),
                ),
            )
            out.append(_Hang(lead, styled(f.message), keep=True))  # a message is never markup
        return out


def _remedies(rems: list, max_remedies: int) -> Iterable[_Line | _Hang]:
    yield _Line(styled("  what to change:", "bold"))
    for r in rems[:max_remedies]:
        title = ((r.title, ""),)
        if r.addresses:
            title += ((f"  [{', '.join(r.addresses)}]", "dim"),)
        yield hang(f"  {r.rank}. ", Styled("bold", title), lead_style="bold")
        pad = " " * (len(str(r.rank)) + 4)
        for a in r.actions:
            yield hang(f"{pad}- ", a)
        if r.watch:
            yield hang(f"{pad}watch: ", r.watch, style="dim")
    if len(rems) > max_remedies:
        yield _Line(styled(f"  (+{len(rems) - max_remedies} more: --max-remedies)", "dim"))


def _verify_hint(run: RunSummary) -> Iterable[_Hang]:
    own = run.config is not None and getattr(run.config, "fw", "") == "stabdiag"
    where = run.path[: -len("/metrics.csv")] if run.path.endswith("/metrics.csv") else run.path
    how = (
        "replays the event from a checkpoint with each remedy and a control"
        if own
        else "a small model with this run's settings"
    )
    yield hang("  ", f"test a fix before paying for it ({how}):", style="dim")
    # On its own line, quoted: a command to copy, not prose to read.
    yield hang(
        "    ", f"stabdiag verify {shlex.quote(where)}" + ("" if own else " --proxy"), style="dim"
    )


def _run(
    report: Report, run: RunSummary, ix: RunIndex, *, max_remedies: int, show_skipped: bool
) -> Iterable[_Line | _Hang | _Findings]:
    yield BLANK
    yield _verdict(report, run, ix)
    if run.loss and run.loss.get("series") != TRAIN_LOSS:
        taken = (
            f"{run.loss['series']} taken as {run.loss['metric']}: "
            if run.loss["series"] != run.loss["metric"]
            else ""
        )
        yield hang("  loss: ", f"{taken}{run.loss['why']}", style="dim")
    configured = run.config_line()
    if configured:
        yield hang("  configured: ", configured, style="dim")
    for w in run.warnings:
        yield hang("  input: ", w, style="warning")
    fs = ix.findings.get(run.name, [])
    if fs:
        yield _Findings(fs)
    if show_skipped:
        # The true reason per detector, one line per reason; the detectors' own words are in
        # --format json and `stabdiag explain KIND`.
        for nc in group(ix.skipped.get(run.name, []), run.metrics):
            yield hang(
                "  not checked: ", f"{', '.join(nc.kinds)} \N{EM DASH} {nc.reason}", style="dim"
            )
    d = run.diagnosis
    if d is not None and d.cause != "healthy":
        yield hang(f"  diagnosis ({d.confidence} confidence): ", d.statement, style="bold")
    rems = ix.remedies.get(run.name, [])
    if rems:
        yield from _remedies(rems, max_remedies)
    if any(f.severity >= Severity.WARNING for f in fs):
        yield from _verify_hint(run)


def by_path(runs: Iterable[RunSummary]) -> list[RunSummary]:
    """Runs in the order the human reports list them: by path (then name), like ``ls``."""
    return sorted(runs, key=lambda r: (r.path, r.name))


def _parts(
    report: Report, *, max_remedies: int, show_skipped: bool
) -> Iterable[_Line | _Hang | _Findings]:
    ix = RunIndex.of(report)
    n = len(report.runs)
    runs = count(n, "run") + (", listed by path" if n > 1 else "")
    yield _Line(
        styled(f"stabdiag {report.version} · {runs} · {tally(counts(report.findings))}", "bold")
    )
    for err in report.errors:
        yield hang("  unreadable: ", err, style="warning")
    for run in by_path(report.runs):
        yield from _run(report, run, ix, max_remedies=max_remedies, show_skipped=show_skipped)


def render_terminal(
    report: Report, *, max_remedies: int = 5, show_skipped: bool = True
) -> RenderableType:
    """The report as a rich renderable, for any console (``render_text`` prints it faster)."""
    return Group(*_parts(report, max_remedies=max_remedies, show_skipped=show_skipped))


def render_text(report: Report, options: RenderOptions) -> str:
    """What ``text_of(render_terminal(report), options)`` prints, byte for byte: the lines of
    ordinary characters laid out by ``_Layout``, the others printed by rich in their place."""
    from stabdiag.render import text_console

    buf = io.StringIO()
    console = text_console(options, buf)
    layout = _Layout(console)
    write = buf.write
    for part in _parts(report, max_remedies=options.max_remedies, show_skipped=True):
        for line in part.parts(layout.width) if type(part) is _Findings else (part,):
            text = layout.part(line)
            if text is None:
                console.print(Group(line))
            else:
                write(text)
    return buf.getvalue()
