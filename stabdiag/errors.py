"""User-facing errors.

Library code raises these; only ``cli.py`` turns them into one line on stderr and exit code 2.
Each message names the file, what was expected and what was found, so the user can act on it.
"""

from __future__ import annotations

from pathlib import Path


class StabdiagError(Exception):
    """Base class for errors the user can fix (bad input, bad options)."""


class SourceError(StabdiagError):
    """A log file or directory could not be read as the expected format."""

    def __init__(self, path: str | Path, expected: str, found: str) -> None:
        from stabdiag.safetext import printable

        # Paths and what was found come from the user's files: escaped, and ``found`` kept short
        # (a message must never quote a file's content at length, see safetext.excerpt).
        self.path = printable(path)
        self.expected = expected
        self.found = printable(found if len(found) <= 300 else found[:300] + "...")
        super().__init__(f"{self.path}: expected {expected}, found {found}")


class ConfigError(StabdiagError, ValueError):
    """An option or configuration value is invalid."""


class TrainError(StabdiagError):
    """Training could not start or continue (bad config, missing torch, bad checkpoint)."""
