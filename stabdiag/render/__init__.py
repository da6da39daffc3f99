"""Renderers: pure functions from a ``Report`` to text. Only ``cli.py`` writes their output."""

from __future__ import annotations

import enum


class OutputFormat(str, enum.Enum):
    """Every ``--format`` value; each maps to exactly one renderer (tested exhaustively)."""

    TEXT = "text"
    JSON = "json"
    MARKDOWN = "markdown"
    HTML = "html"
    JUNIT = "junit"
    GITHUB = "github"
