"""Line handling shared by the stdout-log readers (Megatron, DeepSpeed, fairseq, nanoGPT, ...).

Captured stdout is never clean: launchers prefix lines (torchrun ``[default7]:`` / ``[rank3]:``,
``srun --label`` ``12: ``), tqdm rewrites lines with ``\\r``, torchtitan colours numbers with ANSI
codes, and jobs end in a traceback or a SIGTERM. Each reader sees the same cleaned
``Line(number, rank, text)`` stream, so a quirk is fixed once for all of them.

Logs are read a line at a time (``TextLog``), never whole: a 2 GB stdout capture holds a few
numbers per line worth keeping, and memory must follow those, not the file (issue 13 R1). A line
over ``raw.MAX_LINE`` (binary junk, a sparse file) is refused with one line naming the file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stabdiag.errors import SourceError
from stabdiag.sources.raw import MAX_LINE, RawRun, RunColumns, capped_lines

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# torchrun/elastic: "[default7]:", "[rank3]:"; srun --label: "12: " (digits then colon, space).
_PREFIX = re.compile(r"^\s*(?:\[(?:default|rank)(\d+)\]:|(\d{1,5}): )")

# What a crashed or killed job leaves behind; reported as a warning on the run, never a failure.
_FAILURE = re.compile(
    r"Traceback \(most recent call last\)|received SIGTERM|SIGTERM|SIGKILL|"
    r"\*\*\* JOB \d+ ON \S+ CANCELLED|CUDA error|out of memory|Killed$|"
    r"FloatingPointError|Exiting run\.|terminate called after throwing"
)

HEAD_BYTES = 64 * 1024

# A view of a file as physical lines (no line end), read afresh at each call: the launcher reader
# hands one rank's lines of an interleaved ``torchrun --tee`` file to the unchanged per-format
# readers as such a view, so no rank's text is ever held whole.
LineView = Callable[[], Iterable[str]]

# In-memory stand-ins for files (path string -> text or line view).
_VIRTUAL: ContextVar[Mapping[str, str | LineView] | None] = ContextVar(
    "stabdiag_virtual_text", default=None
)


# A file whose entire content is already in memory (sniffing asked for more than it holds): its
# deep scans search that instead of reading the file again, once per stdout format (issue 13 R4).
_WHOLE: ContextVar[tuple[str, bytes] | None] = ContextVar("stabdiag_whole_file", default=None)


@contextmanager
def whole_file(path: Path, data: bytes) -> Iterator[None]:
    """While active, ``scan`` of ``path`` searches ``data``, the file's whole content."""
    token = _WHOLE.set((str(path), data))
    try:
        yield
    finally:
        _WHOLE.reset(token)


def _virtual(path: Path) -> str | LineView | None:
    texts = _VIRTUAL.get()
    return None if texts is None else texts.get(str(path))


def _virtual_text(path: Path) -> str | None:
    v = _virtual(path)
    return v if v is None or isinstance(v, str) else "\n".join(v())


@contextmanager
def virtual_files(texts: Mapping[Path, str | LineView]) -> Iterator[None]:
    """While active, reads of these paths see the given text (or line view) instead."""
    token = _VIRTUAL.set({**(_VIRTUAL.get() or {}), **{str(p): t for p, t in texts.items()}})
    try:
        yield
    finally:
        _VIRTUAL.reset(token)


@dataclass(frozen=True)
class Line:
    """One line of a captured stdout log, cleaned of launcher prefixes and ANSI codes, with its
    line number (for messages about dropped lines) and the rank that printed it."""

    number: int  # 1-based physical line number in the file
    rank: int | None  # from a launcher prefix, else None
    text: str  # prefix and ANSI codes removed, trailing whitespace kept off


EXPECTED = "a readable text log"


BLOCK = 1 << 20


def blocks(path: Path, size: int = BLOCK) -> Iterator[str]:
    """The decoded text in pieces of whole lines (about ``size`` bytes each; joined, they are
    the whole text), for whole-log regex passes without a Python step per line. UTF-8 never puts
    a ``\\n`` byte inside a character, so each piece decodes as it would in the whole file. A
    line over ``raw.MAX_LINE`` ends the pieces early: the line-by-line pass that follows refuses
    the file with its line number."""
    virtual = _virtual(path)
    if isinstance(virtual, str):
        yield virtual
        return
    if virtual is not None:
        buf: list[str] = []
        n = 0
        for ln in virtual():
            buf.append(ln)
            n += len(ln) + 1
            if n >= size:
                yield "\n".join(buf) + "\n"
                buf, n = [], 0
        if buf:
            yield "\n".join(buf)
        return
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(size):
                if not chunk.endswith(b"\n"):
                    rest = fh.readline(MAX_LINE)
                    if len(rest) >= MAX_LINE and not rest.endswith(b"\n"):
                        return
                    chunk += rest
                yield chunk.decode("utf-8", errors="replace")
    except OSError as exc:
        raise SourceError(path, EXPECTED, str(exc)) from None


def physical_lines(path: Path) -> Iterator[str]:
    """The file's physical lines (split at ``\\n`` only, the line end removed), each decoded
    leniently on its own: a stray byte in stdout must not hide the metrics, and UTF-8 never puts
    a ``\\n`` byte inside a character, so this decodes exactly as the whole file would."""
    return iter(line_source(path)())


def line_source(path: Path) -> LineView:
    """What ``physical_lines(path)`` reads now, as a view that stays bound to it (a view built on
    it may then stand in for the same path without reading itself)."""
    virtual = _virtual(path)
    if isinstance(virtual, str):
        return lambda: virtual.split("\n")
    if virtual is not None:
        return virtual
    return lambda: _file_lines(path)


def _file_lines(path: Path) -> Iterator[str]:
    try:
        with path.open("rb") as fh:
            for raw in capped_lines(fh, path, EXPECTED):
                if raw.endswith(b"\n"):
                    raw = raw[:-1]
                yield raw.decode("utf-8", errors="replace")
    except OSError as exc:
        raise SourceError(path, EXPECTED, str(exc)) from None


def read_text(path: Path) -> str:
    """The whole file decoded leniently. Only for small files (tests, heads): readers iterate
    ``TextLog`` instead, so memory follows the values kept."""
    virtual = _virtual_text(path)
    if virtual is not None:
        return virtual
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise SourceError(path, EXPECTED, str(exc)) from None


def head(path: Path, size: int = HEAD_BYTES) -> str:
    """The first ``size`` bytes, decoded like ``read_text`` (what ``looks_like`` inspects)."""
    virtual = _virtual(path)
    if isinstance(virtual, str):
        return virtual[:size]
    if virtual is not None:
        out: list[str] = []
        n = 0
        for ln in virtual():
            out.append(ln)
            n += len(ln) + 1
            if n >= size:
                break
        return "\n".join(out)[:size]
    with path.open("rb") as fh:
        return fh.read(size).decode("utf-8", errors="replace")


def clean(raw: str) -> tuple[int | None, str]:
    """Strip ANSI codes and one launcher prefix; return (rank or None, text)."""
    text = _ANSI.sub("", raw).rstrip()
    m = _PREFIX.match(text)
    if m is None:
        return None, text
    return int(m.group(1) or m.group(2)), text[m.end() :]


def _cleaned(number: int, physical: str) -> Iterator[Line]:
    """``\\r`` (tqdm rewrites) counts as a line break but not as a line number."""
    for part in physical.split("\r"):
        if part.strip():
            rank, cleaned = clean(part)
            yield Line(number, rank, cleaned)


def lines(text: str) -> Iterator[Line]:
    """Cleaned lines of an in-memory text (what ``TextLog`` yields for a file)."""
    for number, physical in enumerate(text.split("\n"), start=1):
        yield from _cleaned(number, physical)


def failure_at(path: Path, number: int, physical: str) -> str | None:
    """The failure warning when physical line ``number`` shows a traceback or kill, else None."""
    if _FAILURE.search(physical) is None:
        return None
    snippet = _ANSI.sub("", physical).strip()[:120]
    return (
        f'{path}: the job did not end cleanly at line {number}, "{snippet}"; '
        "metrics up to that point were read"
    )


def failure_warning(path: Path, text: str) -> str | None:
    """'PATH: the job did not end cleanly at line N, ...' for the first traceback/kill line."""
    for number, physical in enumerate(text.split("\n"), start=1):
        found = failure_at(path, number, physical)
        if found:
            return found
    return None


class TextLog:
    """One streaming pass over a text log: iterating gives the cleaned ``Line``s one at a time
    (only the current line in memory), and notes on the way the first sign that the job did not
    end cleanly, so that check needs no second pass. ``failure`` is final once iteration ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.failure: str | None = None

    def __iter__(self) -> Iterator[Line]:
        self.failure = None
        for number, physical in enumerate(physical_lines(self.path), start=1):
            if self.failure is None:
                self.failure = failure_at(self.path, number, physical)
            yield from _cleaned(number, physical)


class Kept(RunColumns):
    """The values a text reader keeps, in typed buffers. A step beyond int64 (a damaged
    ``iteration 99999999999999999999``) loses its value with a warning, never the log: the
    same rule and words as ``raw.from_rows``."""

    __slots__ = ("beyond",)

    def __init__(self) -> None:
        super().__init__()
        self.beyond = 0

    def add(
        self, step: int, name: str, value: float, wall: float = math.nan, rank: int | None = None
    ) -> None:
        if not _I64_MIN <= step <= _I64_MAX:
            self.beyond += 1
            return
        super().add(step, name, value, wall, rank)

    def build(self, name: str, path: str, fmt: str, **kw: Any) -> RawRun:
        if self.beyond:
            kw["warnings"] = (
                *kw.get("warnings", ()),
                f"{path}: {self.beyond} values with a step beyond the int64 range dropped",
            )
        return super().build(name, path, fmt, **kw)


_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1


def run_name(path: Path) -> str:
    """A text log's run name: the file stem, or the folder for generic names like main.log."""
    if path.stem.lower() in {"main", "log", "stdout", "output", "train", "out", "console"}:
        return path.resolve().parent.name
    return path.stem


def scan(path: Path, pattern: re.Pattern[bytes], limit: int = 64 * 1024 * 1024) -> bool:
    """Whether ``pattern`` occurs in the first ``limit`` bytes: SLURM .out files often bury the
    first metric line under megabytes of environment dumps, far past the sniffing head."""
    virtual = _virtual(path)
    if isinstance(virtual, str):
        return pattern.search(virtual.encode("utf-8", "replace")[:limit]) is not None
    whole = _WHOLE.get()
    if virtual is None and whole is not None and whole[0] == str(path):
        return pattern.search(whole[1][:limit]) is not None  # what one chunk of the file gives
    try:
        if virtual is not None:
            return _scan_chunks(_view_chunks(virtual), pattern, limit)
        with path.open("rb") as fh:
            return _scan_chunks(iter(lambda: fh.read(1 << 20), b""), pattern, limit)
    except OSError:
        return False


def _view_chunks(view: LineView) -> Iterator[bytes]:
    """A line view as the bytes of its text, about 1 MiB at a time."""
    buf: list[bytes] = []
    n = 0
    for i, ln in enumerate(view()):
        b = (b"\n" if i else b"") + ln.encode("utf-8", "replace")
        buf.append(b)
        n += len(b)
        if n >= 1 << 20:
            yield b"".join(buf)
            buf, n = [], 0
    if buf:
        yield b"".join(buf)


def _scan_chunks(chunks: Iterable[bytes], pattern: re.Pattern[bytes], limit: int) -> bool:
    tail = b""
    read = 0
    for chunk in chunks:
        if read >= limit:
            return False
        chunk = chunk[: limit - read]
        read += len(chunk)
        if pattern.search(tail + chunk):
            return True
        tail = chunk[-512:]
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
        whole = _WHOLE.get()
        if whole is not None and whole[1] is head and whole[0] == str(path):
            return False  # ``head`` is the whole file, just searched: a scan would search it again
        return path.suffix.lower() in deep and scan(path, pattern)

    return looks_like
