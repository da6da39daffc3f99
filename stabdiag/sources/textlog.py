"""Line handling shared by the stdout-log readers (Megatron, DeepSpeed, fairseq, nanoGPT, ...).

Captured stdout is never clean: launchers prefix lines (torchrun ``[default7]:`` / ``[rank3]:``,
``srun --label`` ``12: ``), tqdm rewrites lines with ``\\r``, torchtitan colours numbers with ANSI
codes, and jobs end in a traceback or a SIGTERM. Each reader sees the same cleaned
``Line(number, rank, text)`` stream, so a quirk is fixed once for all of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from stabdiag.errors import SourceError

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# torchrun/elastic: "[default7]:", "[rank3]:"; srun --label: "12: " (digits then colon, space).
_PREFIX = re.compile(r"^\s*(?:\[(?:default|rank)(\d+)\]:|(\d{1,5}): )")

# What a crashed or killed job leaves behind; reported as a warning on the run, never a failure.
_FAILURE = re.compile(
    r"Traceback \(most recent call last\)|received SIGTERM|SIGTERM|SIGKILL|"
    r"\*\*\* JOB \d+ ON \S+ CANCELLED|CUDA error|out of memory|Killed$|"
    r"FloatingPointError|Exiting run\.|terminate called after throwing")

HEAD_BYTES = 64 * 1024

# In-memory stand-ins for files (path string -> text): the launcher reader hands each rank's lines
# of one interleaved ``torchrun --tee`` file to the unchanged per-format readers this way.
_VIRTUAL: ContextVar[Mapping[str, str] | None] = ContextVar("stabdiag_virtual_text", default=None)


def _virtual(path: Path) -> str | None:
    texts = _VIRTUAL.get()
    return None if texts is None else texts.get(str(path))


@contextmanager
def virtual_files(texts: Mapping[Path, str]) -> Iterator[None]:
    """While active, ``read_text``/``head``/``scan`` of these paths return the given text."""
    token = _VIRTUAL.set({**(_VIRTUAL.get() or {}), **{str(p): t for p, t in texts.items()}})
    try:
        yield
    finally:
        _VIRTUAL.reset(token)


@dataclass(frozen=True)
class Line:
    """One line of a captured stdout log, cleaned of launcher prefixes and ANSI codes, with its
    line number (for messages about dropped lines) and the rank that printed it."""

    number: int       # 1-based physical line number in the file
    rank: int | None  # from a launcher prefix, else None
    text: str         # prefix and ANSI codes removed, trailing whitespace kept off


def read_text(path: Path) -> str:
    """The whole file decoded leniently: a stray byte in stdout must not hide the metrics."""
    virtual = _virtual(path)
    if virtual is not None:
        return virtual
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise SourceError(path, "a readable text log", str(exc)) from None


def head(path: Path, size: int = HEAD_BYTES) -> str:
    """The first ``size`` bytes, decoded like ``read_text`` (what ``looks_like`` inspects)."""
    virtual = _virtual(path)
    if virtual is not None:
        return virtual[:size]
    with path.open("rb") as fh:
        return fh.read(size).decode("utf-8", errors="replace")


def clean(raw: str) -> tuple[int | None, str]:
    """Strip ANSI codes and one launcher prefix; return (rank or None, text)."""
    text = _ANSI.sub("", raw).rstrip()
    m = _PREFIX.match(text)
    if m is None:
        return None, text
    return int(m.group(1) or m.group(2)), text[m.end():]


def lines(text: str) -> Iterator[Line]:
    """Cleaned lines; ``\\r`` (tqdm rewrites) counts as a line break but not as a line number."""
    for number, physical in enumerate(text.split("\n"), start=1):
        for part in physical.split("\r"):
            if part.strip():
                rank, cleaned = clean(part)
                yield Line(number, rank, cleaned)


def failure_warning(path: Path, text: str) -> str | None:
    """'PATH: log ends abnormally (line N: ...)' for the first traceback/kill line, if any."""
    for number, physical in enumerate(text.split("\n"), start=1):
        m = _FAILURE.search(physical)
        if m:
            snippet = _ANSI.sub("", physical).strip()[:120]
            return (f"{path}: the job did not end cleanly at line {number}, \"{snippet}\"; "
                    "metrics up to that point were read")
    return None


def run_name(path: Path) -> str:
    """A text log's run name: the file stem, or the folder for generic names like main.log."""
    if path.stem.lower() in {"main", "log", "stdout", "output", "train", "out", "console"}:
        return path.resolve().parent.name
    return path.stem


def scan(path: Path, pattern: re.Pattern[bytes], limit: int = 64 * 1024 * 1024) -> bool:
    """Whether ``pattern`` occurs in the first ``limit`` bytes: SLURM .out files often bury the
    first metric line under megabytes of environment dumps, far past the sniffing head."""
    virtual = _virtual(path)
    if virtual is not None:
        return pattern.search(virtual.encode("utf-8", "replace")[:limit]) is not None
    try:
        with path.open("rb") as fh:
            tail = b""
            read = 0
            while read < limit:
                chunk = fh.read(1 << 20)
                if not chunk:
                    return False
                read += len(chunk)
                if pattern.search(tail + chunk):
                    return True
                tail = chunk[-512:]
    except OSError:
        return False
    return False


TEXT_SUFFIXES = frozenset({".out", ".log", ".txt", ".err", ".stdout", ".md", ""})
# What a deep scan (past the head) looks into: Markdown is documentation, not captured stdout.
PLAIN_SUFFIXES = TEXT_SUFFIXES - {".md"}

Sniffer = Callable[[Path, "bytes | str"], bool]


def sniffer(pattern: re.Pattern[bytes], *, deep: frozenset[str] = PLAIN_SUFFIXES) -> Sniffer:
    """A reader's ``looks_like(path, head)``: ``pattern`` in the head, or (for a file whose suffix
    is in ``deep``) anywhere in its first 64 MiB, since SLURM ``.out`` files often bury the first
    metric line under megabytes of environment dumps. One body for every stdout format, so the
    head/scan rule cannot drift between them; ``head`` may be bytes or (in tests) text."""

    def looks_like(path: Path, head: bytes | str) -> bool:
        if isinstance(head, str):
            head = head.encode("utf-8", "replace")
        if pattern.search(head):
            return True
        return path.suffix.lower() in deep and scan(path, pattern)

    return looks_like
