"""The text report's fast path prints what rich prints, byte for byte (issue 13 R4).

``render_text`` lays out lines of ordinary characters itself and leaves the rest to rich; each
line it lays out must equal rich's own rendering of the same part: plain and with ANSI styles,
at every width, for long words, exact-width lines, trailing blanks, long leads, styled pieces,
and it must hand back to rich what it cannot measure (wide or zero-width characters, controls,
tabs, escapes as a log writes them).
"""

from __future__ import annotations

import io
import random

import pytest
from render_util import make_report
from rich.console import Group
from test_textreport import _report

from stabdiag.render import RenderOptions, render, text_console, text_of
from stabdiag.render.terminal import (
    Styled,
    _Findings,
    _Hang,
    _Layout,
    _Line,
    hang,
    render_terminal,
    styled,
)

MODES = [None, "standard", "truecolor"]
STYLES = ["", "", "bold", "dim", "warning", "error", "ok", "info"]
WORDS = [
    "a",
    "loss",
    "train/grad_norm",
    "—",
    "β2",
    "·",
    "x" * 30,
    "y" * 75,  # longer than any line: folded
    "(30 needed)",
    "\\x1b[2J",  # an escape as the report shows one from a log
    "✘",
    "naïve",
]
ODD = [
    "日本語",
    "e\u0301",
    "tab\there",
    "bell\x07",
    "cr\r",
    "nb\u00a0sp",
    "\u200bzw",
    "😀",
    "\x1b[2J",
]


def _rich(part: object, width: int, color: str | None) -> str:
    return text_of(Group(part), RenderOptions(width=width, color_system=color))


def _fast(part: object, width: int, color: str | None) -> str | None:
    console = text_console(RenderOptions(width=width, color_system=color), io.StringIO())
    return _Layout(console).part(part)


def _phrase(rng: random.Random, odd: bool = False) -> str:
    words = [rng.choice(WORDS + (ODD if odd else [])) for _ in range(rng.randint(0, 14))]
    seps = [" " * rng.choice([1, 1, 1, 2, 3]) for _ in words]
    text = "".join(w + s for w, s in zip(words, seps, strict=True))
    return text if rng.random() < 0.3 else text.rstrip()


def _styled(rng: random.Random, odd: bool = False) -> Styled:
    parts = tuple((_phrase(rng, odd), rng.choice(STYLES)) for _ in range(rng.randint(1, 3)))
    return Styled(rng.choice(STYLES), parts)


def _parts(rng: random.Random, odd: bool) -> list[object]:
    out: list[object] = []
    for _ in range(60):
        lead = " " * rng.choice([0, 2, 4, 6]) + rng.choice(["", "- ", "watch: ", "not checked: "])
        out.append(
            _Hang(
                Styled(rng.choice(STYLES), ((lead, ""),)),
                _styled(rng, odd),
                keep=rng.random() < 0.3,
            )
        )
        out.append(_Line(_styled(rng, odd)))
    return out


@pytest.mark.parametrize("odd", [False, True], ids=["ordinary", "odd-characters"])
def test_fast_lines_equal_rich(odd: bool) -> None:
    rng = random.Random(13 + odd)
    fast = 0
    for part in _parts(rng, odd):
        for width in (12, 37, 60, 80, 121):
            for color in MODES:
                got = _fast(part, width, color)
                if got is not None:
                    fast += 1
                    assert got == _rich(part, width, color), (width, color, vars(part))
    assert fast > (20 if odd else 200)  # the fast path did the work, not rich alone


@pytest.mark.parametrize("text", ODD)
def test_what_it_cannot_measure_goes_to_rich(text: str) -> None:
    assert _fast(hang("  input: ", f"see {text} here"), 80, None) is None
    assert _fast(hang("  input: ", "see here"), 80, None) == "  input: see here\n"


@pytest.mark.parametrize("width", [20, 21, 22, 29, 30, 31])
def test_exact_width_lines(width: int) -> None:
    # Lines that end exactly at the width, one before, one past: where wrapping starts.
    for n in range(width - 12, width + 3):
        for part in (
            hang("  not checked: ", "w" * (n - 15), style="dim"),
            hang("  - ", "ab " * (n // 3)),
            _Line(styled("h" * n, "bold")),
            hang("  lead: ", "x" * (n - 8) + "   ", style="warning"),
        ):
            for color in MODES:
                got = _fast(part, width, color)
                assert got is None or got == _rich(part, width, color)
            assert _fast(part, width, None) is not None or n > width


def test_findings_tables_equal_rich() -> None:
    report = _report(warn=3)
    findings = list(report.findings)
    for width in (40, 60, 79, 80, 81, 120):
        for part in _Findings(findings).parts(width):
            for color in MODES:
                got = _fast(part, width, color)
                assert got is not None and got == _rich(part, width, color)


@pytest.mark.parametrize("color", MODES)
@pytest.mark.parametrize("width", [24, 40, 60, 80, 120])
def test_whole_reports_equal_rich(width: int, color: str | None) -> None:
    for report in (_report(), _report(n_remedies=7, runs=("b", "a")), make_report(nasty=True)):
        opts = RenderOptions(width=width, color_system=color)
        assert render(report, "text", opts) == text_of(render_terminal(report), opts)


def test_no_color_is_honoured_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    report = _report()
    opts = RenderOptions(width=60, color_system="standard")
    text = render(report, "text", opts)
    assert text == text_of(render_terminal(report), opts)
    assert "\x1b[1m" in text and "\x1b[33m" not in text  # bold kept, colours dropped
