"""Following log files that are still being written: only the new, complete part is read.

Why pieces through the ordinary readers: a follower cuts the bytes appended since its last poll
at the last complete unit (a line ending in ``\\n``; a whole TFRecord), gives that piece, with the
CSV header in front, to ``stabdiag.sources.load`` in a scratch copy, and appends the resulting
series to the run. So a poll costs what was written since the last one, a half-written last line
or record is left for the next poll (never a "bad rows dropped" note), and every spelling,
alias and reader rule is exactly the one ``stabdiag analyze`` applies.

Files that are rewritten rather than appended (trainer_state.json, MLflow runs, W&B exports) are
re-read whole when they change. A file that shrinks, is replaced (new inode) or whose first bytes
change (Lightning's CSVLogger rewrites metrics.csv with a new header when a metric appears) is
read again from the start, with one warning; an unreadable or vanished file gets one warning and
the others are followed on.
"""

from __future__ import annotations

import os
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path

from stabdiag import sources
from stabdiag.errors import StabdiagError
from stabdiag.sources import sniff
from stabdiag.table import RunData

LINE_FORMATS = frozenset({sniff.CSV, sniff.LIGHTNING_CSV, sniff.JSONL, *sniff.TEXT_FORMATS})
HEADER_FORMATS = frozenset({sniff.CSV, sniff.LIGHTNING_CSV})
MAX_READ = 64 << 20  # bytes read per file and poll (a huge backlog is read over several polls)
_HEAD = 256  # bytes compared on every poll to notice an in-place rewrite


@dataclass
class Piece:
    """What one poll of one file gave: series to append (or, with ``replace``, to replace the
    file's earlier data), warnings, and how many bytes were read."""

    data: list[RunData] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    replace: bool = False
    nbytes: int = 0


class Follower:
    """One watched file (or, for rewritten formats, one file group) of one run key."""

    def __init__(self, path: Path, fmt: str, name: str, scratch: Path) -> None:
        self.path = path
        self.fmt = fmt
        self.name = name  # the run name this file's data goes to
        self.scratch = (
            scratch / path.parent.name
        )  # keeps the parent's name: readers name runs by it
        self.appendable = fmt in LINE_FORMATS or fmt == sniff.TENSORBOARD
        self.ident: tuple[int, int] | None = None
        self.offset = 0
        self.head = b""
        self.header = b""
        self.signature: tuple[int, int] | None = None  # (size, mtime) of a rewritten-format file
        self.problem: str | None = None  # the last warning about this file (said once)

    # ------------------------------------------------------------------ polling

    def poll(self, final: bool = False) -> Piece:
        piece = Piece()
        try:
            with open(self.path, "rb") as fh:
                st = os.fstat(fh.fileno())
                if self.appendable:
                    self._read_appended(fh, st, final, piece)
                elif (st.st_size, st.st_mtime_ns) != self.signature:
                    self.signature = (st.st_size, st.st_mtime_ns)
                    piece.replace = True
                    piece.nbytes = st.st_size
                    piece.data = self._load(self.path, piece)
        except FileNotFoundError:
            self._say(piece, f"{self.path}: removed while watched; its data so far is kept")
            return piece
        except OSError as e:
            self._say(piece, f"{self.path}: cannot be read ({e.strerror or e}); still watching it")
            return piece
        self.problem = None
        return piece

    def _say(self, piece: Piece, message: str) -> None:
        if message != self.problem:
            piece.warnings.append(message)
            self.problem = message

    def _read_appended(self, fh, st: os.stat_result, final: bool, piece: Piece) -> None:
        ident = (st.st_dev, st.st_ino)
        why = None
        if self.ident is not None and ident != self.ident:
            why = "replaced"
        elif st.st_size < self.offset:
            why = "truncated"
        elif self.head:
            fh.seek(0)
            if fh.read(len(self.head)) != self.head:
                why = "rewritten"
        if why is not None:
            piece.warnings.append(
                f"{self.path}: {why} while watched; reading it again from the start"
            )
            piece.replace = True
            self.offset, self.head, self.header = 0, b"", b""
        self.ident = ident
        if st.st_size <= self.offset:
            return
        fh.seek(self.offset)
        buf = fh.read(min(st.st_size - self.offset, MAX_READ))
        more = self.offset + len(buf) < st.st_size
        cut = self._complete(buf, final and not more)
        if cut <= 0:
            return
        chunk = buf[:cut]
        if self.fmt in HEADER_FORMATS:
            if self.offset == 0:
                nl = chunk.find(b"\n")
                self.header = chunk[: nl + 1] if nl >= 0 else chunk
                body = chunk
            else:
                body = self.header + chunk
        else:
            body = chunk
        if self.offset == 0:
            self.head = chunk[:_HEAD]
        self.offset += cut
        piece.nbytes += cut
        piece.data += self._load_bytes(body, piece)

    def _complete(self, buf: bytes, final: bool) -> int:
        """Length of the complete units at the start of ``buf`` (all of it when ``final``)."""
        if final:
            return len(buf)
        if self.fmt != sniff.TENSORBOARD:
            return buf.rfind(b"\n") + 1
        off = 0
        while off + 12 <= len(buf):
            (n,) = struct.unpack_from("<Q", buf, off)
            if off + n + 16 > len(buf):
                break
            off += n + 16
        return off

    # ------------------------------------------------------------------ reading

    def _load_bytes(self, body: bytes, piece: Piece) -> list[RunData]:
        self.scratch.mkdir(parents=True, exist_ok=True)
        tmp = self.scratch / self.path.name
        tmp.write_bytes(body)
        try:
            return self._load(tmp, piece)
        finally:
            tmp.unlink(missing_ok=True)

    def _load(self, path: Path, piece: Piece) -> list[RunData]:
        try:
            # Scratch pieces must not enter the parsed-file cache (they are deleted right after).
            got = sources.load([path], fmt=self.fmt, cache=False)
        except StabdiagError as e:
            # A piece with no data in it (startup lines of a stdout log) is not a problem.
            text = str(e).replace(str(path), str(self.path))
            if "no metric" not in text and "no readable record" not in text:
                self._say(piece, text)
            return []
        out = []
        single = len(got.runs) == 1
        for info, part in zip(got.runs, got.parts, strict=True):
            piece.warnings += [
                w.replace(str(path), str(self.path))
                for w in info.warnings
                if not w.endswith("no metric values found")
            ]
            d = part.run_data(info.name, meta=info.meta)
            name = self.name if single else f"{self.name}/{info.name}"
            out.append(RunData(name=name, series=d.series, by_rank=d.by_rank, meta=d.meta))
        return out

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


def rewind(f: Follower) -> None:
    """Make ``f`` read its file again from the start on its next poll."""
    f.offset, f.head, f.header, f.signature, f.ident = 0, b"", b"", None, None
