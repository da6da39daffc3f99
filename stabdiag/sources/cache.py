"""A cache of parsed TensorBoard event files, so that re-analysing unchanged logs is nearly free.

One entry per event file (``<dir>/<sha256 of the real path>.npz``): the reader's resumable state
(stabdiag.sources.tensorboard._Stream: decoded arrays, tags, plugin names, framing counters) plus
the key it is valid for. Rules, in order ("never wrong beats fast"):

- Hit only if the reader version (READER_VERSION and a hash of the reader's source), the plugin
  names known before the file (they change how a file decodes), the file's device, inode, size,
  mtime and ctime, and the CRC32C of its first and last SAMPLE_BYTES are all what they were.
  ctime cannot be set back by a user, so an in-place rewrite with a restored mtime is still a
  miss; the content sample catches a same-size rewrite within one timestamp tick (filesystems
  with 1-second or coarser times: ext3, FAT, HFS+).
- An entry is checked in full before it is used (types, array lengths, codes within the tag
  tables); anything malformed is a miss, never a crash and never trusted.
- A file that grew, whose earlier read ended cleanly at its old size and whose first ``size``
  bytes still have the same CRC32C, is read incrementally: only the appended bytes are parsed.
- Anything else (smaller, rewritten, unreadable or corrupt entry, other version) is a full read.
- Entries are written atomically (temp file + rename); failing to read or write one never fails
  the analysis.

Size: the entries together stay under ``$STABDIAG_CACHE_MAX_MB`` (default MAX_MB); after each
write the least recently used entries (a hit refreshes an entry's mtime) are removed until they
fit. ``stabdiag cache info`` / ``stabdiag cache clear`` show and empty it.

Location: ``$STABDIAG_CACHE_DIR``, else ``$XDG_CACHE_HOME/stabdiag``, else ``~/.cache/stabdiag``.
Disabled by ``STABDIAG_NO_CACHE=1`` (``stabdiag analyze --no-cache``). Files under MIN_BYTES are
not cached: reading them costs less than an entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
from google_crc32c import extend as _crc_extend

from stabdiag.sources import tensorboard as tb

MIN_BYTES = 1 << 20
MAX_MB = 2048
SAMPLE_BYTES = 64 * 1024
FORMAT = 3  # layout of an entry; part of the key together with the reader's version


def _reader_version() -> str:
    """tb.READER_VERSION plus a hash of the reader's source, so that an edit to the decoder
    invalidates entries even when nobody remembered to bump the version."""
    try:
        src = Path(tb.__file__).read_bytes()
    except OSError:
        src = b""
    return f"{tb.READER_VERSION}:{hashlib.sha256(src).hexdigest()[:16]}"


_ARRAYS = ("codes", "steps", "values", "walls", "bare")


def enabled() -> bool:
    return os.environ.get("STABDIAG_NO_CACHE", "").strip().lower() in ("", "0", "false", "no")


def cache_dir() -> Path:
    explicit = os.environ.get("STABDIAG_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "stabdiag"


def max_bytes() -> int:
    raw = os.environ.get("STABDIAG_CACHE_MAX_MB", "").strip()
    return (int(raw) if raw.isdigit() else MAX_MB) << 20


def entries() -> list[tuple[Path, int, float]]:
    """(path, bytes, mtime) of every entry, least recently used first."""
    out = []
    try:
        for e in os.scandir(cache_dir()):
            if e.name.endswith(".npz") and not e.name.startswith(".tmp-"):
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                out.append((Path(e.path), st.st_size, st.st_mtime))
    except OSError:
        return []
    return sorted(out, key=lambda x: x[2])


def prune(limit: int | None = None) -> int:
    """Remove least recently used entries until the rest fit in ``limit`` bytes; returns how many
    were removed. ``limit=0`` empties the cache (``stabdiag cache clear``)."""
    limit = max_bytes() if limit is None else limit
    es = entries()
    total = sum(n for _, n, _ in es)
    removed = 0
    for p, n, _ in es:
        if total <= limit:
            break
        try:
            p.unlink()
        except OSError:
            continue
        total -= n
        removed += 1
    return removed


def entry_path(path: str | Path) -> Path:
    real = os.path.realpath(path)
    return cache_dir() / (
        hashlib.sha256(real.encode("utf-8", "surrogatepass")).hexdigest()[:40] + ".npz"
    )


class _CrcReader:
    """A binary file whose reads also accumulate the CRC32C of everything read."""

    def __init__(self, fh: Any, crc: int = 0) -> None:
        self.fh, self.crc = fh, crc

    def read(self, n: int) -> bytes:
        data = self.fh.read(n)
        self.crc = _crc_extend(self.crc, data)
        return data


def _stat_key(st: os.stat_result) -> dict[str, int]:
    return {
        "dev": st.st_dev,
        "ino": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
    }


def _sample(fh: Any, size: int) -> int:
    """CRC32C of the file's first and last SAMPLE_BYTES (binds an entry to the content)."""
    fh.seek(0)
    crc = _crc_extend(0, fh.read(SAMPLE_BYTES))
    fh.seek(max(0, size - SAMPLE_BYTES))
    crc = _crc_extend(crc, fh.read(SAMPLE_BYTES))
    fh.seek(0)
    return crc


_INT_KEYS = ("consumed", "framed", "records", "bad_records", "crc")
_DTYPES = {
    "codes": np.int32,
    "steps": np.int64,
    "values": np.float64,
    "walls": np.float64,
    "bare": np.bool_,
}
# An entry stores each array in the narrowest of these types that holds it exactly (most files:
# int8 codes, int32 steps, float32 values: 17 bytes a value instead of 29) and ``bare`` empty
# when no value is a bare tensor; loading widens them back to _DTYPES.
_STORED = {
    "codes": (np.int8, np.int16, np.int32),
    "steps": (np.int32, np.int64),
    "values": (np.float32, np.float64),
    "walls": (np.float64,),
    "bare": (np.bool_,),
}
_SLICE = 1 << 20  # values checked for an exact float32 a slice at a time (bounded scratch memory)


def _narrow(key: str, a: np.ndarray) -> np.ndarray:
    """``a`` in the narrowest stored type that gives it back bit for bit (NaN payloads too)."""
    if key == "bare":
        return a if a.any() else a[:0]
    if key == "values":
        for lo in range(0, len(a), _SLICE):
            part = a[lo : lo + _SLICE]
            with np.errstate(over="ignore", invalid="ignore"):
                back = part.astype(np.float32).astype(np.float64)
            if not np.array_equal(back.view(np.int64), part.view(np.int64)):
                return a
        return a.astype(np.float32)
    if key in ("codes", "steps") and len(a):
        lo, hi = int(a.min()), int(a.max())
        for dt in _STORED[key][:-1]:
            info = np.iinfo(dt)
            if info.min <= lo and hi <= info.max:
                return a.astype(dt)
    return a


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _valid(meta: Any, arrays: dict[str, np.ndarray]) -> bool:
    """Every field an entry is restored from has the type and range the reader produces."""
    if (
        not isinstance(meta, dict)
        or meta.get("format") != FORMAT
        or meta.get("reader") != _reader_version()
    ):
        return False
    try:
        str_map = all(
            isinstance(meta[k], dict)
            and all(isinstance(a, str) and isinstance(b, str) for a, b in meta[k].items())
            for k in ("plugins_in", "plugins_out")
        )
        ok = (
            str_map
            and isinstance(meta["path"], str)
            and isinstance(meta["key"], dict)
            and all(
                _is_int(meta["key"].get(k))
                for k in ("dev", "ino", "size", "mtime_ns", "ctime_ns", "sample")
            )
            and all(_is_int(meta[k]) for k in _INT_KEYS)
            and all(meta[k] >= 0 for k in _INT_KEYS if k != "crc")
            and all(isinstance(t, str) for k in ("fast_tags", "slow_tags") for t in meta[k])
            and isinstance(meta["fast_tags"], list)
            and isinstance(meta["slow_tags"], list)
            and isinstance(meta["bad_crc"], list)
            and all(_is_int(b) for b in meta["bad_crc"])
            and (meta["stop"] is None or isinstance(meta["stop"], str))
            and isinstance(meta["resync"], bool)
            and isinstance(meta["skipped"], list)
            and all(
                isinstance(x, list) and len(x) == 3 and all(map(_is_int, x))
                for x in meta["skipped"]
            )
        )
    except (KeyError, TypeError, AttributeError):
        return False
    if not ok:
        return False
    n = len(arrays["codes"])
    for k, dt in _DTYPES.items():
        a = arrays[k]
        if a.dtype != dt or a.ndim != 1 or len(a) != n:
            return False
    codes = arrays["codes"]
    return not n or (
        int(codes.max()) < len(meta["fast_tags"]) and int(codes.min()) >= -len(meta["slow_tags"])
    )


def _widen(key: str, a: np.ndarray) -> np.ndarray:
    """A stored array in the reader's type; one of an unexpected type is left as it is (and
    fails validation)."""
    if a.dtype in tuple(np.dtype(t) for t in _STORED[key]) and a.ndim == 1:
        return a.astype(_DTYPES[key], copy=False)
    return a


def _load(entry: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    try:
        with np.load(entry, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode("utf-8"))
            arrays = {k: _widen(k, z[k]) for k in _ARRAYS}  # one array in memory twice at most
            if not len(arrays["bare"]):
                arrays["bare"] = np.zeros(len(arrays["codes"]), np.bool_)
    except (
        OSError,
        ValueError,
        KeyError,
        TypeError,
        zipfile.BadZipFile,
        EOFError,
        UnicodeDecodeError,
        RecursionError,
    ):
        return None
    return (meta, arrays) if _valid(meta, arrays) else None


def _restore(
    path: str,
    meta: dict[str, Any],
    arrays: dict[str, np.ndarray],
    plugins: MutableMapping[str, str],
) -> tb._Stream:
    st = tb._Stream(path, plugins)
    plugins.clear()
    plugins.update(meta["plugins_out"])
    st.fast_tags = {t.encode("latin-1"): i for i, t in enumerate(meta["fast_tags"])}
    st.slow_tags = {t: i for i, t in enumerate(meta["slow_tags"])}
    st.parts = [tuple(arrays[k] for k in _ARRAYS)]
    st.consumed, st.framed, st.records = meta["consumed"], meta["framed"], meta["records"]
    st.bad_crc, st.bad_records, st.stop = list(meta["bad_crc"]), meta["bad_records"], meta["stop"]
    st.skipped = [tuple(x) for x in meta["skipped"]]
    st.resync = bool(meta["resync"])
    return st


def _save(
    entry: Path, st: tb._Stream, key: dict[str, int], plugins_in: dict[str, str], crc: int
) -> None:
    st.compact()
    parts = (
        st.parts[0]
        if st.parts
        else (
            np.zeros(0, np.int32),
            np.zeros(0, np.int64),
            np.zeros(0),
            np.zeros(0),
            np.zeros(0, bool),
        )
    )
    meta = {
        "format": FORMAT,
        "reader": _reader_version(),
        "path": st.path,
        "key": key,
        "plugins_in": plugins_in,
        "plugins_out": dict(st.plugins),
        "crc": crc,
        "fast_tags": [t.decode("latin-1") for t in st.fast_tags],
        "slow_tags": list(st.slow_tags),
        "consumed": st.consumed,
        "framed": st.framed,
        "records": st.records,
        "bad_crc": st.bad_crc,
        "bad_records": st.bad_records,
        "stop": st.stop,
        "skipped": st.skipped,
        "resync": st.resync,
    }
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(
                    fh,
                    meta=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
                    **{k: _narrow(k, a) for k, a in zip(_ARRAYS, parts, strict=True)},
                )
            os.replace(tmp, entry)
        except BaseException:
            os.unlink(tmp)
            raise
        prune()
    except OSError:
        pass  # a read-only or full cache dir only costs speed


def read_event_file(
    path: str | Path, plugins: MutableMapping[str, str] | None = None
) -> tb.Scalars:
    """tensorboard.read_file through the cache (same result, byte for byte)."""
    path = str(path)
    plugins = {} if plugins is None else plugins
    if not enabled():
        return tb.read_file(path, plugins)
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        if st.st_size < MIN_BYTES:
            fh.close()
            return tb.read_file(path, plugins)
        key = {**_stat_key(st), "sample": _sample(fh, st.st_size)}
        plugins_in = dict(plugins)
        entry = entry_path(path)
        cached = _load(entry)
        if cached is not None and (
            cached[0]["path"] != path or cached[0]["plugins_in"] != plugins_in
        ):
            cached = None
        if cached is not None and cached[0]["key"] == key:
            try:
                result = _restore(path, *cached, plugins).result()
                with contextlib.suppress(OSError):
                    os.utime(entry)  # recently used: pruned last
                return result
            except (ValueError, IndexError, TypeError, KeyError):  # never trusted past validation
                plugins.clear()
                plugins.update(plugins_in)
                cached = None
        state = None
        reader = _CrcReader(fh)
        if cached is not None:
            meta, arrays = cached
            old = meta["key"]
            if (
                meta["stop"] is None
                and old["dev"] == key["dev"]
                and old["ino"] == key["ino"]
                and meta["consumed"] == old["size"] < key["size"]
            ):
                # Appended: check that the old bytes are unchanged, then parse only the new ones.
                left = old["size"]
                while left > 0:
                    data = reader.read(min(left, tb.CHUNK_BYTES))
                    if not data:
                        break
                    left -= len(data)
                if left == 0 and reader.crc == meta["crc"]:
                    state = _restore(path, meta, arrays, plugins)
                else:
                    fh.seek(0)
                    reader.crc = 0
        if state is None:
            plugins.clear()
            plugins.update(plugins_in)
            state = tb._Stream(path, plugins)
        tb._read_stream(reader, state, key["size"])
        result = state.result()
        # Only a file read to the size it was stat'ed at has a CRC of exactly that prefix.
        _save(entry, state, key, plugins_in, reader.crc if fh.tell() == key["size"] else -1)
        return result
