"""TensorBoard event files: our own TFRecord framing + minimal Event decoding.

Why not tbparse / EventAccumulator: without TensorFlow they read records through tensorboard's
pure-Python stub reader and CRC, ~50k scalars/s (research/perf.md). Here the framing loop is the
only per-record Python work (with C CRC32C via ``google_crc32c``); the dominant record shape,
``add_scalar``'s ``wall_time, step, summary{value{tag, simple_value}}``, is decoded for all records
at once with numpy. Every other record (tensor scalars, metadata, text, histograms) goes through a
small pure-Python wire decoder that reads only the fields we need.

Wire facts used (tensorboard/compat/proto/event.proto, summary.proto, tensor.proto):
Event{1: wall_time double, 2: step int64, 5: Summary}; Summary{1: repeated Value};
Value{1: tag, 2: simple_value float, 8: TensorProto, 9: SummaryMetadata{1: PluginData{1: name}}};
TensorProto{1: dtype, 2: shape{2: dim{1: size}}, 4: tensor_content, 5: float_val, 6: double_val,
7: int_val, 10: int64_val, 11: bool_val, 13: half_val}. Framing: research/formats.md section 1.2.
"""

from __future__ import annotations

import os
import struct
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from google_crc32c import value as _crc32c

_U64 = struct.Struct("<Q").unpack_from
_U32 = struct.Struct("<I").unpack_from
_F32 = struct.Struct("<f").unpack_from
_F64 = struct.Struct("<d").unpack_from

SCALAR_PLUGIN = "scalars"

# TensorFlow DataType enum -> numpy dtype for the numeric types a scalar can have.
_DTYPES = {
    1: np.dtype("<f4"),
    2: np.dtype("<f8"),
    3: np.dtype("<i4"),
    4: np.dtype("u1"),
    5: np.dtype("<i2"),
    6: np.dtype("i1"),
    9: np.dtype("<i8"),
    10: np.dtype("?"),
    17: np.dtype("<u2"),
    19: np.dtype("<f2"),
    22: np.dtype("<u4"),
    23: np.dtype("<u8"),
}
_DT_BFLOAT16, _DT_HALF = 14, 19


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC32C (rotate right by 15, add a constant)."""
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@dataclass(frozen=True)
class Scalars:
    """Scalar values of one or more event files in write order; ``codes`` index ``tags``."""

    tags: tuple[str, ...]
    codes: np.ndarray  # int32
    steps: np.ndarray  # int64
    values: np.ndarray  # float64
    wall_time: np.ndarray  # float64
    warnings: tuple[str, ...]
    records: int


def is_event_file(path: Path) -> bool:
    return path.name.startswith("events.out.tfevents")


def looks_like_tfrecord(head: bytes) -> bool:
    """A TFRecord starts with a length whose masked CRC follows it."""
    return len(head) >= 12 and masked_crc(head[:8]) == _U32(head, 8)[0]


def check_data_crc(buf: bytes, heads: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(payload starts, payload lengths, data-CRC ok) of the records whose headers are at ``heads``."""
    u64 = np.ndarray((len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))
    u32 = np.ndarray((len(buf) - 3,), dtype="<u4", buffer=buf, strides=(1,))
    lens = u64[heads].astype(np.int64)
    starts = heads + 12
    # map() chains keep the per-record slicing and CRC calls in C.
    payloads = map(buf.__getitem__, map(slice, starts.tolist(), (starts + lens).tolist()))
    crc = np.fromiter(map(_crc32c, payloads), dtype=np.uint32, count=len(heads)).astype(np.uint64)
    masked = (
        ((crc >> np.uint64(15)) | (crc << np.uint64(17))) + np.uint64(0xA282EAD8)
    ) & np.uint64(0xFFFFFFFF)
    return starts, lens, masked == u32[starts + lens]


def frame(buf: bytes, path: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return (payload offsets, payload lengths, warnings) of every intact record.

    A bad length CRC or a short tail ends the scan (nothing after it can be framed reliably);
    a bad data CRC skips that one record, since its length was verified. The sequential walk
    is the only per-record Python loop; data CRCs are computed in one comprehension and compared
    with numpy.
    """
    offs: list[int] = []
    add_off = offs.append
    length_of: dict[bytes, int] = {}  # header -> length: lengths repeat, so one check each
    get_length = length_of.get
    warnings: list[str] = []
    off, size = 0, len(buf)
    while off + 12 <= size:
        header = buf[off : off + 12]
        n = get_length(header)
        if n is None:
            if masked_crc(header[:8]) != _U32(header, 8)[0]:
                warnings.append(
                    f"{path}: length CRC mismatch at byte {off}; "
                    f"stopped reading, {size - off} bytes after it ignored"
                )
                off = size + 1  # no trailing-bytes warning on top
                break
            n = length_of[header] = _U64(header)[0]
        if off + n + 16 > size:
            warnings.append(
                f"{path}: truncated record at byte {off} (needs {n + 16} bytes, "
                f"{size - off} left); kept the {len(offs)} records before it"
            )
            off = size + 1
            break
        add_off(off)
        off += n + 16
    if off < size:
        warnings.append(
            f"{path}: truncated record header at byte {off} ({size - off} bytes); "
            f"kept the {len(offs)} records before it"
        )
    heads = np.array(offs, dtype=np.int64)
    if not len(heads):
        return heads, heads.copy(), warnings
    starts, lens, good = check_data_crc(buf, heads)
    if not good.all():
        bad = heads[~good].tolist()
        where = ", ".join(str(b) for b in bad[:5])
        warnings.append(
            f"{path}: {len(bad)} record(s) with a data CRC mismatch skipped "
            f"(at byte {where}{', ...' if len(bad) > 5 else ''})"
        )
        starts, lens = starts[good], lens[good]
    return starts, lens, warnings


# --------------------------------------------------------------------------- vectorised path


def _np_varint(
    a: np.ndarray, pos: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode varints starting at ``pos`` (at most ``width`` bytes): value, byte count, bad flag."""
    last = a.size - 1
    value = np.zeros(pos.size, dtype=np.uint64)
    nbytes = np.zeros(pos.size, dtype=np.int64)
    live = np.ones(pos.size, dtype=bool)
    for i in range(width):
        byte = a[np.minimum(pos + i, last)].astype(np.uint64)
        value |= np.where(live, (byte & np.uint64(0x7F)) << np.uint64(7 * i), np.uint64(0))
        nbytes += live
        live &= byte >= 0x80
        if not live.any():
            break
    return value, nbytes, live  # still "live" after width bytes = longer than allowed


# Tensor scalars as torch (new_style) and TF2's writer lay them out: Value.tensor (0x42, length)
# holding dtype DT_FLOAT, an optional empty shape, and one float as packed float_val (2a 04),
# non-packed float_val (2d) or tensor_content (22 04). (prefix, tensor length) -> float follows.
_TENSOR_FORMS = tuple(
    (bytes.fromhex(prefix), length)
    for prefix, length in (
        ("0801 2a04", 8),
        ("0801 1200 2a04", 10),
        ("0801 2204", 8),
        ("0801 1200 2204", 10),
        ("0801 2d", 7),
        ("0801 1200 2d", 9),
    )
)
# Value.metadata = {plugin_data {plugin_name: "scalars"}}, byte for byte.
_SCALARS_METADATA = bytes.fromhex("4a0b0a090a07") + b"scalars"


def _fast_scalars(buf: bytes, starts: np.ndarray, lens: np.ndarray):
    """Decode records holding one float32 scalar in the common layouts, all at once.

    ``09 wall [10 step] 2a L 0a L 0a L tag`` then either ``15 f32`` (simple_value) or a
    float tensor (``_TENSOR_FORMS``) optionally followed by the scalars-plugin metadata.
    Returns (mask of decoded records, tag start, tag length, step, value, wall_time, and
    whether the record was a tensor without metadata: its tag's plugin is checked later).
    """
    a = np.frombuffer(buf, dtype=np.uint8)
    last = a.size - 1
    ends = starts + lens

    def at(ix: np.ndarray) -> np.ndarray:
        return a[np.minimum(ix, last)]

    ok = (at(starts) == 0x09) & (lens >= 9 + 2 + 2 + 2 + 5)
    pos = starts + 9
    has_step = at(pos) == 0x10
    sv, sn, sbad = _np_varint(a, pos + 1, 10)
    ok &= ~(has_step & sbad)
    steps = np.where(has_step, sv, np.uint64(0)).view(np.int64)
    pos = np.where(has_step, pos + 1 + sn, pos)
    for tag in (0x2A, 0x0A):  # Event.summary, then Summary.value: each must run to the end
        ok &= at(pos) == tag
        ln, nn, bad = _np_varint(a, pos + 1, 3)
        pos = pos + 1 + nn
        ok &= ~bad & (pos + ln.astype(np.int64) == ends)
    ok &= at(pos) == 0x0A  # Value.tag
    tl, tn, tbad = _np_varint(a, pos + 1, 3)
    ok &= ~tbad
    tpos = pos + 1 + tn
    tlen = tl.astype(np.int64)
    vpos = tpos + tlen
    simple = ok & (at(vpos) == 0x15) & (vpos + 5 == ends)
    fpos = vpos + 1  # where the float32 starts
    bare_tensor = np.zeros(len(starts), dtype=bool)
    rest = np.flatnonzero(ok & ~simple & (at(vpos) == 0x42))
    if len(rest):  # tensor forms: only looked at when such records exist
        v = vpos[rest]
        e = ends[rest]
        tstart = v + 2
        for prefix, length in _TENSOR_FORMS:
            hit = at(v + 1) == length
            for j, byte in enumerate(prefix):
                hit &= at(tstart + j) == byte
            tend = tstart + length
            bare = tend == e
            meta = e - tend == len(_SCALARS_METADATA)
            for j, byte in enumerate(_SCALARS_METADATA):
                meta &= at(tend + j) == byte
            hit &= bare | meta
            sel = rest[hit]
            simple[sel] = True
            fpos[sel] = tstart[hit] + len(prefix)
            bare_tensor[sel] = bare[hit]
    idx = np.flatnonzero(simple)
    # Unaligned stride-1 views: element i is the float starting at byte i.
    f32 = np.ndarray((max(a.size - 3, 0),), dtype="<f4", buffer=buf, strides=(1,))
    f64 = np.ndarray((max(a.size - 7, 0),), dtype="<f8", buffer=buf, strides=(1,))
    values = f32[fpos[idx]].astype(np.float64)
    walls = f64[starts[idx] + 1]
    return simple, tpos[idx], tlen[idx], steps[idx], values, walls, bare_tensor[idx]


_BYTE_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [(1 << 64) - 1], dtype=np.uint64)


LONG_TAG = 256  # tags longer than this are grouped with a dict (see _tag_codes)


def _tag_codes(buf: bytes, tpos: np.ndarray, tlen: np.ndarray) -> tuple[np.ndarray, list[bytes]]:
    """Codes (first-seen order) and tag bytes of every record's tag.

    The vectorised grouping costs records x longest tag, so one enormous tag among many records
    would make it quadratic: tags over LONG_TAG bytes (never a real scalar name) are grouped
    with a dict instead, which costs their own length only, and the two sets are merged.
    """
    long = tlen > LONG_TAG
    if not long.any():
        return _short_tag_codes(buf, tpos, tlen)
    s_idx, l_idx = np.flatnonzero(~long), np.flatnonzero(long)
    s_codes, s_tags = _short_tag_codes(buf, tpos[s_idx], tlen[s_idx])
    index: dict[bytes, int] = {}
    l_codes = np.array(
        [
            index.setdefault(buf[p : p + n], len(index))
            for p, n in zip(tpos[l_idx].tolist(), tlen[l_idx].tolist(), strict=True)
        ],
        dtype=np.int64,
    )
    tags = s_tags + list(index)
    # first occurrence of each code, in the full record order (codes are first-seen within a set)
    firsts = np.concatenate(
        [
            s_idx[np.unique(s_codes, return_index=True)[1]],
            l_idx[np.unique(l_codes, return_index=True)[1]],
        ]
    )
    order = np.argsort(firsts, kind="stable")
    rank = np.empty(len(order), dtype=np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    codes = np.empty(len(tpos), dtype=np.int32)
    codes[s_idx] = rank[s_codes]
    codes[l_idx] = rank[len(s_tags) + l_codes]
    return codes, [tags[i] for i in order]


def _short_tag_codes(
    buf: bytes, tpos: np.ndarray, tlen: np.ndarray
) -> tuple[np.ndarray, list[bytes]]:
    """Group records by tag bytes without a per-record Python call.

    Hash the tag's 8-byte words, group by hash, then check every member word-by-word against its
    group's first member; only if that ever fails (a hash collision) fall back to a dict.
    """
    if not len(tpos):
        return np.zeros(0, np.int32), []
    u64 = np.ndarray((len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))
    words = int(tlen.max() + 7) // 8
    last = len(buf) - 8

    def word(pos: np.ndarray, k: int) -> np.ndarray:
        # Past a tag's end the mask is 0, so the clamped read's value does not matter.
        return u64[np.minimum(pos + 8 * k, last)] & _BYTE_MASKS[np.clip(tlen - 8 * k, 0, 8)]

    h = tlen.astype(np.uint64)
    for k in range(words):
        h = h * np.uint64(0x100000001B3) ^ word(tpos, k)
    _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    rep = tpos[first][inverse]
    same = tlen[first][inverse] == tlen
    for k in range(words):
        same &= word(tpos, k) == word(rep, k)
    if not same.all():  # a 64-bit hash collision: exact but slower
        index: dict[bytes, int] = {}
        codes = [
            index.setdefault(buf[p : p + n], len(index))
            for p, n in zip(tpos.tolist(), tlen.tolist(), strict=True)
        ]
        return np.array(codes, dtype=np.int32), list(index)
    by_first = np.argsort(first)  # codes in first-seen order
    rank = np.empty_like(by_first)
    rank[by_first] = np.arange(len(first))
    first = first[by_first]
    tags = [buf[p : p + n] for p, n in zip(tpos[first].tolist(), tlen[first].tolist(), strict=True)]
    return rank[inverse.ravel()].astype(np.int32), tags


# --------------------------------------------------------------------------- pure-Python path


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A protobuf varint: at most 10 bytes (64 bits). Longer is damage, not a bigger number: an
    unbounded loop over a record of 0xFF bytes would be quadratic in the record size."""
    result = shift = 0
    while shift < 70:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
    raise ValueError(f"varint longer than 10 bytes at byte {pos - 10}")


def _fields(buf: bytes, start: int, end: int):
    """Yield (field number, wire type, value) where value is an int or a (start, end) span."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if field == 0:  # invalid in protobuf: damage, not a field to skip byte by byte
            raise ValueError("field number 0")
        if wire == 0:
            v, pos = _varint(buf, pos)
            yield field, wire, v
        elif wire == 1:
            yield field, wire, (pos, pos + 8)
            pos += 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            yield field, wire, (pos, pos + n)
            pos += n
        elif wire == 5:
            yield field, wire, (pos, pos + 4)
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _plugin_name(buf: bytes, s: int, e: int) -> str:
    for f, w, v in _fields(buf, s, e):
        if f == 1 and w == 2:  # plugin_data
            for f2, w2, v2 in _fields(buf, *v):
                if f2 == 1 and w2 == 2:
                    return buf[v2[0] : v2[1]].decode("utf-8", "replace")
    return ""


def _packed(buf: bytes, span: tuple[int, int], wire: int, kind: str) -> list[float]:
    s, e = span
    if kind == "f4":
        return list(np.frombuffer(buf[s:e], "<f4")) if wire == 2 else [_F32(buf, s)[0]]
    if kind == "f8":
        return list(np.frombuffer(buf[s:e], "<f8")) if wire == 2 else [_F64(buf, s)[0]]
    out = []
    pos = s
    while pos < e:
        v, pos = _varint(buf, pos)
        out.append(v)
    return out


def _tensor_scalar(buf: bytes, s: int, e: int) -> float | None:
    """The single numeric value of a rank-0 (or one-element) TensorProto, else None."""
    dtype = 0
    n_elems = 1
    content: tuple[int, int] | None = None
    vals: list[float] = []
    ints: list[int] = []
    halves: list[int] = []
    for f, w, v in _fields(buf, s, e):
        if f == 1 and w == 0:
            dtype = v
        elif f == 2 and w == 2:  # shape: product of dim sizes
            for f2, w2, v2 in _fields(buf, *v):
                if f2 == 2 and w2 == 2:
                    for f3, w3, v3 in _fields(buf, *v2):
                        if f3 == 1 and w3 == 0:
                            n_elems *= v3
        elif f == 4 and w == 2:
            content = v
        elif f == 5:
            vals += _packed(buf, v, w, "f4") if w != 0 else []
        elif f == 6:
            vals += _packed(buf, v, w, "f8") if w != 0 else []
        elif f in (7, 10, 11, 16, 17):  # int_val, int64_val, bool_val, uint32_val, uint64_val
            ints += [v] if w == 0 else _packed(buf, v, w, "varint")
        elif f == 13:
            halves += [v] if w == 0 else _packed(buf, v, w, "varint")
    if n_elems != 1:
        return None
    if dtype == _DT_BFLOAT16:  # two bytes (content) or a 16-bit half_val; anything else is damage
        if content is not None:
            bits = (
                [int.from_bytes(buf[content[0] : content[1]], "little")]
                if content[1] - content[0] == 2
                else []
            )
        else:
            bits = halves[:1]
        if not bits or not 0 <= bits[0] <= 0xFFFF:
            return None
        return float(np.array([bits[0] << 16], dtype="<u4").view("<f4")[0])
    if content is not None:
        dt = _DTYPES.get(dtype)
        if dt is None or content[1] - content[0] != dt.itemsize:
            return None
        return float(np.frombuffer(buf[content[0] : content[1]], dtype=dt)[0])
    if dtype == _DT_HALF and halves:
        if not 0 <= halves[0] <= 0xFFFF:
            return None
        return float(np.array(halves[:1], dtype="<u2").view("<f2")[0])
    if vals:
        return float(vals[0])
    if ints and dtype in _DTYPES:
        v = ints[0]
        if dtype in (3, 9) and v >= 1 << 63:  # negative ints are 64-bit two's complement
            v -= 1 << 64
        return float(v)
    return None


def _decode_event(buf: bytes, s: int, e: int, plugins: MutableMapping[str, str]):
    """Yield (tag, step, value, wall_time) of every scalar in one Event record."""
    wall, step = 0.0, 0
    summary = None
    for f, w, v in _fields(buf, s, e):
        if f == 1 and w == 1:
            wall = _F64(buf, v[0])[0]
        elif f == 2 and w == 0:
            step = v - (1 << 64) if v >= 1 << 63 else v
        elif f == 5 and w == 2:
            summary = v
    if summary is None:
        return
    for f, w, v in _fields(buf, *summary):
        if f != 1 or w != 2:
            continue
        tag, simple, tensor, plugin = "", None, None, None
        for f2, w2, v2 in _fields(buf, *v):
            if f2 == 1 and w2 == 2:
                tag = buf[v2[0] : v2[1]].decode("utf-8", "surrogateescape")
            elif f2 == 2 and w2 == 5:
                simple = _F32(buf, v2[0])[0]
            elif f2 == 8 and w2 == 2:
                tensor = v2
            elif f2 == 9 and w2 == 2:
                plugin = _plugin_name(buf, *v2)
        if plugin:  # metadata may appear only on a tag's first event: remember it
            plugins[tag] = plugin
        if simple is not None:
            yield tag, step, float(simple), wall
        elif tensor is not None and plugins.get(tag, SCALAR_PLUGIN) == SCALAR_PLUGIN:
            x = _tensor_scalar(buf, *tensor)
            if x is not None:
                yield tag, step, x, wall


# --------------------------------------------------------------------------- streaming

READER_VERSION = 1  # bump whenever the decoded output of a file can change (invalidates caches)
CHUNK_BYTES = 16 << 20  # records are framed and decoded this many bytes at a time

# CRC32C (Castagnoli, reflected 0x82F63B78) table, for checking many 8-byte length headers at once.
_CRC_TABLE = np.zeros(256, dtype=np.uint32)
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ (0x82F63B78 if _c & 1 else 0)
    _CRC_TABLE[_i] = _c
del _i, _c


def _np_masked_crc8(a: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """masked_crc(a[p:p+8]) for every p in ``pos`` (all in bounds), vectorised."""
    crc = np.full(pos.size, 0xFFFFFFFF, dtype=np.uint32)
    for j in range(8):
        crc = _CRC_TABLE[(crc ^ a[pos + j]) & 0xFF] ^ (crc >> np.uint32(8))
    crc = (crc ^ np.uint32(0xFFFFFFFF)).astype(np.uint64)
    return (((crc >> np.uint64(15)) | (crc << np.uint64(17))) + np.uint64(0xA282EAD8)) & np.uint64(
        0xFFFFFFFF
    )


def _frame_fast(buf: bytes, end: int) -> tuple[np.ndarray, int] | None:
    """Record offsets of ``buf[:end]`` framed without a per-record loop, or None when unsure.

    Every position whose 8-byte length has zero high bytes and whose length CRC matches is a
    candidate; if the candidates chain exactly (the first at 0, each record ending where the
    next candidate starts) they are precisely what the sequential walk would visit. Anything
    else (damage, a header-like pattern inside a payload) returns None: walk sequentially.
    Returns (heads of the records lying wholly in ``buf[:end]``, offset after the last one).
    """
    if end < 12:
        return None
    u32 = np.ndarray((end - 3,), dtype="<u4", buffer=buf, strides=(1,))
    # is_cand[i]: the high half of the length at i is 0 (and the header fits in buf). Compared
    # as four contiguous word views (one per alignment): much faster than one stride-1 view.
    is_cand = np.empty(end - 11, dtype=bool)
    for k in range(4):
        n = len(range(k, end - 11, 4))
        is_cand[k::4] = np.frombuffer(buf, dtype="<u4", count=n, offset=k + 4) == 0
    cand = np.flatnonzero(is_cand)
    if not len(cand) or cand[0] != 0:
        return None
    lens = np.ndarray((end - 7,), dtype="<u8", buffer=buf, strides=(1,))[cand]
    # A record that ends at another candidate (or near the end) can be on the chain; this
    # drops most look-alikes (e.g. positions just before a header's zero bytes) before the CRC.
    nxt = cand + lens.astype(np.int64) + 16
    near = (nxt >= len(is_cand)) | is_cand[np.minimum(nxt, len(is_cand) - 1)]
    cand, lens = cand[near], lens[near]
    if not len(cand) or cand[0] != 0:
        return None
    expect = u32[cand + 8]
    # Real lengths repeat: one CRC per distinct small length; the rest (rare) vectorised.
    small = lens < (1 << 16)
    present = np.flatnonzero(np.bincount(lens[small].astype(np.int64), minlength=1))
    table = np.zeros(1 << 16, dtype=np.uint32)
    table[present] = [masked_crc(struct.pack("<Q", n)) for n in present.tolist()]
    good = table[np.where(small, lens, 0).astype(np.int64)] == expect
    big = np.flatnonzero(~small)
    if len(big):
        a = np.frombuffer(buf, dtype=np.uint8, count=end)
        good[big] = _np_masked_crc8(a, cand[big]) == expect[big]
    cand, lens = cand[good], lens[good]
    if not len(cand) or cand[0] != 0:
        return None
    nxt = cand + lens.astype(np.int64) + 16
    if not np.array_equal(nxt[:-1], cand[1:]):
        return None
    if nxt[-1] > end:  # the last record continues past end: leave it for the next chunk
        return cand[:-1], int(cand[-1])
    return cand, int(nxt[-1])


def find_header(buf: bytes, start: int, base: int, size: int) -> int | None:
    """The first offset >= ``start`` in ``buf`` that holds a plausible record header: a length
    under 4 GiB whose masked CRC matches and that fits in the file (``base`` is buf's offset in
    a file of ``size`` bytes). Vectorised, a window at a time."""
    end = len(buf) - 11
    window = 1 << 20
    for lo in range(start, max(end, start), window):
        hi = min(lo + window, end)
        pos = np.arange(lo, hi, dtype=np.int64)
        high = np.ndarray((len(buf) - 7,), dtype="<u4", buffer=buf, offset=4, strides=(1,))
        pos = pos[high[pos] == 0]
        if not len(pos):
            continue
        a = np.frombuffer(buf, dtype=np.uint8)
        u32 = np.ndarray((len(buf) - 3,), dtype="<u4", buffer=buf, strides=(1,))
        pos = pos[_np_masked_crc8(a, pos) == u32[pos + 8]]
        if not len(pos):
            continue
        lens = np.ndarray((len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))[pos]
        pos = pos[base + pos + lens.astype(np.int64) + 16 <= size]
        if len(pos):
            return int(pos[0])
    return None


class _Stream:
    """Resumable state of reading one event file: feed it bytes in order, then ``result()``.

    Reading a file in any number of pieces gives exactly the output of reading it whole, which
    is what makes chunked reading (bounded memory) and incremental re-reading of appended files
    (stabdiag.sources.cache) safe.
    """

    def __init__(self, path: str, plugins: MutableMapping[str, str]) -> None:
        self.path = path
        self.plugins = plugins
        self.fast_tags: dict[bytes, int] = {}
        self.slow_tags: dict[str, int] = {}  # tags seen only on the slow path: code -1 - i
        self.parts: list[tuple[np.ndarray, ...]] = []  # (codes, steps, values, walls, bare)
        self.consumed = 0  # file offset after the last whole record
        self.framed = 0  # records framed (data CRC good or not)
        self.records = 0  # records whose data CRC matched
        self.bad_crc: list[int] = []
        self.bad_records = 0
        self.stop: str | None = None  # framing stopped for good (length CRC, truncation)
        self.resync = False  # looking for the next valid header after an impossible length
        self.skipped: list[tuple[int, int, int]] = []  # (offset, bytes skipped, bad length)

    # -- framing
    def _walk(self, buf: bytes, base: int, eof: bool, size: int) -> tuple[list[int], int]:
        """The sequential walk of frame(): record heads (relative) and where it stopped."""
        offs: list[int] = []
        off, end = 0, len(buf)
        while off + 12 <= end:
            if masked_crc(buf[off : off + 8]) != _U32(buf, off + 8)[0]:
                self.stop = (
                    f"{self.path}: length CRC mismatch at byte {base + off}; "
                    f"stopped reading, {size - base - off} bytes after it ignored"
                )
                return offs, off
            n = _U64(buf, off)[0]
            if base + off + n + 16 > size:  # longer than the file: a damaged header (R2)
                nxt = find_header(buf, off + 1, base, size)
                if nxt is None and eof:  # nothing valid after it: a record cut off at the end
                    self.stop = self._truncated(base + off, n, size, len(offs))
                    return offs, off
                if nxt is None:
                    used = max(off, end - 11)
                    self.skipped.append((base + off, used - off, n))
                    self.resync = True  # go on looking in the next chunk
                    return offs, used
                self.skipped.append((base + off, nxt - off, n))
                off = nxt
                continue
            if off + n + 16 > end:
                if eof:
                    self.stop = self._truncated(base + off, n, size, len(offs))
                return offs, off
            offs.append(off)
            off += n + 16
        if eof and off < end:
            self.stop = (
                f"{self.path}: truncated record header at byte {base + off} "
                f"({size - base - off} bytes); kept the {self.framed + len(offs)} "
                f"records before it"
            )
        return offs, off

    def _truncated(self, at: int, n: int, size: int, new: int) -> str:
        return (
            f"{self.path}: truncated record at byte {at} (needs {n + 16} bytes, {size - at} "
            f"left); kept the {self.framed + new} records before it"
        )

    def feed(self, buf: bytes, eof: bool, size: int) -> int:
        """Read the whole records at the start of ``buf`` (which starts at file offset
        ``self.consumed``); returns how many bytes were used. At ``eof`` a partial tail is damage."""
        if self.stop is not None:
            return len(buf)
        if self.resync:  # skip to the next valid header (see _walk)
            nxt = find_header(buf, 0, self.consumed, size)
            if nxt is None and eof:  # no valid header after it: it was a cut-off last record
                off0, _, bad = self.skipped.pop()
                self.stop = self._truncated(off0, bad, size, 0)
                self.resync = False
                self.consumed += len(buf)
                return len(buf)
            if nxt is None:
                used = max(0, len(buf) - 11)
                off0, n0, bad = self.skipped[-1]
                self.skipped[-1] = (off0, n0 + used, bad)
                self.consumed += used
                return used
            off0, n0, bad = self.skipped[-1]
            self.skipped[-1] = (off0, n0 + nxt, bad)
            self.resync = False
            self.consumed += nxt
            return nxt + self.feed(buf[nxt:], eof, size)
        fast = _frame_fast(buf, len(buf))
        if fast is not None and (not eof or fast[1] == len(buf)):
            heads, used = fast
        else:
            offs, used = self._walk(buf, self.consumed, eof, size)
            heads = np.array(offs, dtype=np.int64)
        self.framed += len(heads)
        if len(heads):
            self._decode(buf, heads)
        self.consumed += used
        return used

    # -- decoding
    def _decode(self, buf: bytes, heads: np.ndarray) -> None:
        starts, lens, good = check_data_crc(buf, heads)
        if not good.all():
            self.bad_crc += (heads[~good] + self.consumed).tolist()
            starts, lens = starts[good], lens[good]
        self.records += len(starts)
        ok, tpos, tlen, steps, values, walls, bare = _fast_scalars(buf, starts, lens)
        local, tag_bytes = _tag_codes(buf, tpos, tlen)
        remap = np.array(
            [self.fast_tags.setdefault(t, len(self.fast_tags)) for t in tag_bytes], dtype=np.int32
        )
        codes = remap[local] if len(tag_bytes) else local
        slow_rec: list[int] = []
        slow: list[tuple[str, int, float, float]] = []
        for r in np.flatnonzero(~ok).tolist():
            s = int(starts[r])
            try:
                got = list(_decode_event(buf, s, s + int(lens[r]), self.plugins))
            except (ValueError, IndexError, OverflowError, struct.error):
                self.bad_records += 1
                continue
            slow += got
            slow_rec += [r] * len(got)
        if slow:
            fast_code = {t.decode("utf-8", "surrogateescape"): c for t, c in self.fast_tags.items()}
            scodes = [
                fast_code[t]
                if t in fast_code
                else -1 - self.slow_tags.setdefault(t, len(self.slow_tags))
                for t, _, _, _ in slow
            ]
            rec = np.concatenate([np.flatnonzero(ok), np.array(slow_rec, dtype=np.int64)])
            o = np.argsort(rec, kind="stable")
            codes = np.concatenate([codes, np.array(scodes, dtype=np.int32)])[o]
            steps = np.concatenate([steps, np.array([x[1] for x in slow], dtype=np.int64)])[o]
            values = np.concatenate([values, np.array([x[2] for x in slow], dtype=np.float64)])[o]
            walls = np.concatenate([walls, np.array([x[3] for x in slow], dtype=np.float64)])[o]
            bare = np.concatenate([bare, np.zeros(len(slow), dtype=bool)])[o]
        self.parts.append((codes.astype(np.int32, copy=False), steps, values, walls, bare))

    # -- output
    def compact(self) -> None:
        """Concatenate the decoded parts into one of each array, a field at a time, each
        part's piece let go once joined (peak: the parts plus one field, not twice the data)."""
        if len(self.parts) < 2:
            return
        parts = [list(p) for p in self.parts]
        self.parts = []
        joined = []
        for k in range(len(parts[0])):
            joined.append(np.concatenate([p[k] for p in parts]))
            for p in parts:
                p[k] = None
        self.parts = [tuple(joined)]

    def result(self) -> Scalars:
        self.compact()
        if self.parts:
            codes, steps, values, walls, bare = self.parts[0]
        else:
            codes, steps, values, walls, bare = (
                np.zeros(0, np.int32),
                np.zeros(0, np.int64),
                np.zeros(0),
                np.zeros(0),
                np.zeros(0, bool),
            )
        warnings = [self.stop] if self.stop else []
        for off, n, bad in self.skipped[:5]:
            warnings.append(
                f"{self.path}: impossible record length {bad} at byte {off} (the file "
                f"is shorter); skipped {n} bytes to the next valid record header"
            )
        if len(self.skipped) > 5:
            warnings.append(
                f"{self.path}: {len(self.skipped) - 5} more damaged record headers skipped"
            )
        if self.bad_crc:
            bad = self.bad_crc
            where = ", ".join(str(b) for b in bad[:5])
            warnings.append(
                f"{self.path}: {len(bad)} record(s) with a data CRC mismatch skipped "
                f"(at byte {where}{', ...' if len(bad) > 5 else ''})"
            )
        if self.bad_records:
            warnings.append(
                f"{self.path}: {self.bad_records} record(s) could not be decoded as Event; skipped"
            )
        # surrogateescape: distinct tag bytes stay distinct strings (load() escapes them for output)
        tags = [t.decode("utf-8", "surrogateescape") for t in self.fast_tags]
        # A tensor without metadata is a scalar unless its tag's first event named another plugin.
        other = [self.plugins.get(t, SCALAR_PLUGIN) != SCALAR_PLUGIN for t in tags]
        if bare.any() and any(other):
            keep = ~(bare & np.array(other, dtype=bool)[np.maximum(codes, 0)] & (codes >= 0))
            codes, steps, values, walls = codes[keep], steps[keep], values[keep], walls[keep]
        tag_code = {t: i for i, t in enumerate(tags)}
        slow_final = np.array(
            [tag_code.setdefault(t, len(tag_code)) for t in self.slow_tags], dtype=np.int32
        )
        neg = codes < 0
        if len(slow_final) and neg.any():  # only the slow codes are looked up (C1: np.where
            codes = codes.copy()  # indexed slow_final with every fast code too)
            codes[neg] = slow_final[-1 - codes[neg]]
        return Scalars(
            tuple(tag_code),
            codes.astype(np.int32, copy=False),
            steps,
            values,
            walls,
            tuple(warnings),
            self.records,
        )


def _read_stream(fh, state: _Stream, size: int, chunk: int = CHUNK_BYTES) -> None:
    """Feed ``fh`` (positioned at ``state.consumed``) to ``state`` up to file offset ``size``."""
    carry = b""
    pos = state.consumed
    while True:
        want = min(chunk, size - pos)
        data = fh.read(want) if want > 0 else b""
        pos += len(data)
        eof = pos >= size or not data
        buf = carry + data if carry else data
        used = state.feed(buf, eof, size)
        if eof or state.stop is not None:
            return
        carry = buf[used:]
        if used == 0:  # one record larger than a chunk: read more at once
            chunk *= 2


# --------------------------------------------------------------------------- public


def read_file(path: str | Path, plugins: MutableMapping[str, str] | None = None) -> Scalars:
    """Read every scalar of one event file, in write order; damage becomes warnings.

    The file is framed and decoded in chunks of CHUNK_BYTES (memory stays bounded for any size)."""
    path = str(path)
    state = _Stream(path, {} if plugins is None else plugins)
    with open(path, "rb") as fh:
        _read_stream(fh, state, os.fstat(fh.fileno()).st_size)
    return state.result()


def read_files(paths: Sequence[str | Path], read=None) -> Scalars:
    """Read several event files of one run (ordered by file name, as TensorBoard does).

    ``read`` replaces read_file (same signature and result), e.g.
    stabdiag.sources.cache.read_event_file."""
    read = read or read_file
    plugins: dict[str, str] = {}
    ordered = sorted(paths, key=lambda p: Path(p).name)
    parts = [read(p, plugins) for p in ordered]
    # no record and no damage warning: a zero-length file (a writer that never flushed)
    empty = tuple(
        f"{p}: empty event file (0 bytes); ignored"
        for p, part in zip(ordered, parts, strict=True)
        if not part.records and not part.warnings
    )
    if len(parts) == 1:  # one file: its arrays as they are (no copy of every value)
        return replace(parts[0], warnings=parts[0].warnings + empty)
    tags: dict[str, int] = {}
    codes = []
    for part in parts:
        remap = np.array([tags.setdefault(t, len(tags)) for t in part.tags], dtype=np.int32)
        codes.append(remap[part.codes] if len(part.tags) else part.codes)
    return Scalars(
        tuple(tags),
        np.concatenate(codes) if codes else np.zeros(0, np.int32),
        np.concatenate([p.steps for p in parts]) if parts else np.zeros(0, np.int64),
        np.concatenate([p.values for p in parts]) if parts else np.zeros(0),
        np.concatenate([p.wall_time for p in parts]) if parts else np.zeros(0),
        tuple(w for p in parts for w in p.warnings) + empty,
        sum(p.records for p in parts),
    )
