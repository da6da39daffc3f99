"""Safe report writes: a report or plot is either the old file or the complete new one.

A CI job that reads ``report.json`` while stabdiag writes it, or a write cut short by a full disk,
must never see half a file: write a temporary file beside the target, fsync, then rename over it.

The rename is only right for regular files (or a path that does not exist yet). Run as root with
``-o /dev/null`` it would replace the device node with a regular file, so:

- character devices, FIFOs and ``/dev/std*`` are written through (opened and written, no rename);
- a symlink to a regular file replaces the target (the link stays a link);
- anything else (a directory, a socket, a block device) is refused;
- a writable file in a directory we cannot create files in is rewritten in place.

A new file gets the mode the umask gives (as ``open`` would); a replaced file keeps its mode.
A temp file left by a write that was killed (SIGKILL during fsync) is removed by the next write
of the same target once it is older than STALE_SECONDS.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

STALE_SECONDS = 600.0
_STD_STREAMS = frozenset({"/dev/stdout", "/dev/stderr", "/dev/tty", "/dev/fd/1", "/dev/fd/2"})


class UnsafeTarget(OSError):
    """The output path is neither a regular file, a character device nor a FIFO."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_through(path: Path, raw: bytes) -> None:
    """Devices, FIFOs, terminals: open and write, never create or rename anything."""
    fd = os.open(path, os.O_WRONLY | os.O_NOCTTY)
    with os.fdopen(fd, "wb") as fh:
        fh.write(raw)
        fh.flush()


def _write_in_place(path: Path, raw: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(0)
        fh.write(raw)
        fh.flush()
        os.fsync(fh.fileno())


def _clean_stale(path: Path) -> None:
    now = time.time()
    with contextlib.suppress(OSError):
        for e in os.scandir(path.parent):
            if e.name.startswith(f".{path.name}.") and e.name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    if (
                        e.is_file(follow_symlinks=False)
                        and now - e.stat(follow_symlinks=False).st_mtime > STALE_SECONDS
                    ):
                        os.unlink(e.path)


def target_kind(path: Path) -> str:
    """'new', 'regular', 'stream' (char device, FIFO, /dev/std*) or 'other' (refused)."""
    if str(path) in _STD_STREAMS or str(path).startswith("/proc/self/fd/"):
        return "stream"
    try:
        st = os.stat(path)  # follows symlinks: what a write would reach
    except FileNotFoundError:
        return "new"
    if stat.S_ISREG(st.st_mode):
        return "regular"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        return "stream"
    return "other"


def write_files(out_dir: str | Path, files: Mapping[str, bytes]) -> list[Path]:
    """Write ``name -> bytes`` into ``out_dir`` (created), each atomically; the paths, in order.

    Renderers return bytes and never write; this is what the CLI (and the sweep, for its own
    results directory) writes them with."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in files.items():
        write_atomic(out / name, data)
        written.append(out / name)
    return written


def write_atomic(path: Path, data: str | bytes) -> None:
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    kind = target_kind(path)
    if kind == "stream":
        _write_through(path, raw)
        return
    if kind == "other":
        raise UnsafeTarget(errno.EINVAL, "not a regular file, character device or FIFO; refused")
    if kind == "regular" and path.is_symlink():
        path = Path(os.path.realpath(path))  # replace the link's target, keep the link
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = stat.S_IMODE(os.stat(path).st_mode) if kind == "regular" else 0o666 & ~_umask()
    _clean_stale(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except PermissionError:
        if kind == "regular" and os.access(path, os.W_OK):
            _write_in_place(path, raw)  # read-only directory, writable file
            return
        raise
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
