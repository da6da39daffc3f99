"""The two rich consoles: stdout carries reports, stderr carries progress, warnings and errors.

Colour only on a TTY (rich decides from ``isatty``; ``NO_COLOR`` is honoured by rich too).
"""

from __future__ import annotations

from rich.console import Console
from rich.theme import Theme

THEME = Theme(
    {
        "error": "bold red",
        "warning": "yellow",
        "info": "cyan",
        "ok": "green",
        "dim": "dim",
        "metric": "magenta",
    }
)

SEVERITY_STYLE = {"error": "error", "warning": "warning", "info": "info"}


def make_console(*, stderr: bool = False, width: int | None = None) -> Console:
    return Console(stderr=stderr, theme=THEME, width=width, highlight=False, soft_wrap=False)


out = make_console()
err = make_console(stderr=True)
