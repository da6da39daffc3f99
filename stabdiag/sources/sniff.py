"""Which reader a file needs, and which files a directory walk may open at all.

``sniff`` turns checkpoints and other binaries away by name (a ``pytorch_model.bin`` is a pickle,
and reading logs must never execute user files), then asks the reader registry
(``registry.detect``: the first ``Reader`` whose ``looks_like`` claims the file). ``walk`` and
``special`` keep a walk inside the given tree and away from devices, FIFOs and /proc.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from stabdiag.sources import registry, tensorboard
from stabdiag.sources.registry import (  # noqa: F401 - format names, re-exported for live/ and cli
    CSV,
    FORMATS,
    HF_TRAINER_STATE,
    JSONL,
    LIGHTNING_CSV,
    MLFLOW,
    STDOUT_FORMATS,
    TENSORBOARD,
    WANDB_CSV,
    WANDB_OFFLINE,
)

# Views of the registry for live/ (watch, follow): derived, never listed here.
TEXT_FORMATS = STDOUT_FORMATS
FAMILY = {r.name: r.family for r in registry.READERS}

# Never opened: model/optimizer checkpoints, pickles, arrays, archives, media.
SKIP_SUFFIXES = frozenset(
    {
        ".bin",
        ".pt",
        ".pth",
        ".safetensors",
        ".ckpt",
        ".pkl",
        ".pickle",
        ".joblib",
        ".h5",
        ".hdf5",
        ".keras",
        ".npz",
        ".npy",
        ".msgpack",
        ".onnx",
        ".gguf",
        ".pb",
        ".index",
        ".tar",
        ".gz",
        ".zip",
        ".bz2",
        ".xz",
        ".zst",
        ".7z",
        ".png",
        ".jpg",
        ".jpeg",
        ".gif",
        ".mp4",
        ".wav",
        ".parquet",
        ".arrow",
        ".so",
        ".pyc",
        ".model",
    }
)
_SKIP_TUPLE = tuple(SKIP_SUFFIXES)  # str.endswith takes a tuple: one call per file sniffed
# TF/Keras checkpoint shards carry the marker mid-name (model.ckpt-1000.data-00000-of-00001).
_SKIP_NAME = re.compile(r"\.ckpt-|\.data-\d+-of-\d+")


def is_skipped(path: Path) -> bool:
    """True for files we must not open (checkpoints, pickles, binaries), by name only."""
    name = path.name.lower()
    if tensorboard.is_event_file(path):
        return False
    return name.endswith(_SKIP_TUPLE) or bool(_SKIP_NAME.search(name))


def sniff(path: Path) -> str | None:
    """The format of one file, or None when it is not a metrics log we read."""
    if is_skipped(path):
        return None
    return registry.detect(path)


# Never read while walking: kernel and device trees (a symlink to /proc/self/environ is a secret).
_NEVER_READ = ("/proc", "/sys", "/dev")


def _inside(target: str, roots: tuple[str, ...]) -> bool:
    return any(target == r or target.startswith(r.rstrip("/") + "/") for r in roots) and not any(
        target == n or target.startswith(n + "/") for n in _NEVER_READ
    )


def special(path: Path) -> str | None:
    """What an explicitly given path is when it is not something to read: a FIFO, a device, a
    socket, or a file under /proc, /sys or /dev (never read, even when named explicitly)."""
    import stat

    real = os.path.realpath(path)
    if any(real == n or real.startswith(n + "/") for n in _NEVER_READ):
        return f"a path under /{real.split('/')[1]} (never read)"
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    for test, what in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return f"{what}, not a log file"
    return None


def walk(root: Path, on_error: Callable[[Path, OSError], None] | None = None) -> Iterator[Path]:
    """Every file under ``root`` (see ``walk_real``)."""
    return (f for f, _ in walk_real(root, on_error))


def walk_real(
    root: Path, on_error: Callable[[Path, OSError], None] | None = None
) -> Iterator[tuple[Path, str]]:
    """Every file under ``root`` in sorted order; skips hidden dirs/files and __pycache__,
    follows directory symlinks once (a symlink loop is visited only once). A symlink is followed
    only when its target stays inside ``root`` (a link out of the tree, e.g. to /proc/self/environ
    or ~/.ssh, is not an input the user gave), and only regular files are yielded (no FIFOs,
    devices or sockets). A directory that cannot be listed is passed to ``on_error`` (the
    caller says so) and the walk goes on.

    Each file comes with its real path (``os.path.realpath``, what ``Path.resolve`` gives):
    the directory's, resolved once, joined with the name, unless the entry is itself a link
    (resolving every file cost three system calls a file: issue 13 R4)."""
    roots = (os.path.realpath(root),)
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            st = d.stat()
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as exc:
            if on_error is not None:
                on_error(d, exc)
            continue
        subdirs = []
        real_d = None
        for e in entries:
            if e.name.startswith(".") or e.name == "__pycache__":
                continue
            try:
                real = None
                if e.is_symlink():
                    real = os.path.realpath(e.path)
                    if not _inside(real, roots):
                        continue
                if e.is_dir():
                    subdirs.append(Path(e.path))
                elif e.is_file():
                    if real is None:
                        real_d = real_d or os.path.realpath(d)
                        real = os.path.join(real_d, e.name)
                    yield Path(e.path), real
            except OSError:
                continue
        stack.extend(reversed(subdirs))
