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
        self.path = str(path)
        self.expected = expected
        self.found = found
        super().__init__(f"{self.path}: expected {expected}, found {found}")


class ConfigError(StabdiagError, ValueError):
    """An option or configuration value is invalid."""


class TrainError(StabdiagError):
    """Training could not start or continue (bad config, missing torch, bad checkpoint)."""
