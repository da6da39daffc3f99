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


# Object stores and web servers a path may name by mistake (pasted from a console or a notebook):
# pathlib would fold ``gs://bucket/run`` into ``gs:/bucket/run``, a local path that is not there.
REMOTE_SCHEMES = (
    "gs",
    "gcs",
    "s3",
    "s3a",
    "s3n",
    "http",
    "https",
    "hf",
    "az",
    "abfs",
    "abfss",
    "adl",
    "wasb",
    "wasbs",
    "hdfs",
    "dbfs",
    "ftp",
    "sftp",
    "oci",
    "r2",
)


def remote_url(path: str | Path) -> str | None:
    """The URL a path names (``s3://b/run``, also after pathlib folded it to ``s3:/b/run``), or None."""
    scheme, sep, rest = str(path).partition(":/")
    if not sep or scheme.lower() not in REMOTE_SCHEMES:
        return None
    return f"{scheme}://{rest.lstrip('/')}"


class RemotePathError(SourceError):
    """A path is a remote URL: logs are read from local files only (download them first)."""

    def __init__(self, url: str) -> None:
        from stabdiag.safetext import printable

        self.path, self.expected, self.found = (
            printable(url),
            "a local log file or directory",
            "a URL",
        )
        StabdiagError.__init__(self, f"remote paths are not supported; download first: {self.path}")


class ConfigError(StabdiagError, ValueError):
    """An option or configuration value is invalid."""


class TrainError(StabdiagError):
    """Training could not start or continue (bad config, missing torch, bad checkpoint)."""
