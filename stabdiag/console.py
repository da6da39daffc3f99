"""The two rich consoles: stdout carries reports, stderr carries progress, warnings and errors.

Colour only on a TTY (rich decides from ``isatty``; ``NO_COLOR`` is honoured by rich too).
"""

from __future__ import annotations

import os

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


# Off a terminal (CI logs, pipes) rich would wrap at 80 columns; findings read better at 120.
PIPE_WIDTH = 120


def make_console(*, stderr: bool = False, width: int | None = None) -> Console:
    c = Console(stderr=stderr, theme=THEME, width=width, highlight=False, soft_wrap=False)
    if width is None and not c.is_terminal and "COLUMNS" not in os.environ:
        c.width = PIPE_WIDTH
    return c


out = make_console()
err = make_console(stderr=True)
