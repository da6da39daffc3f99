"""One printable form for every string that comes out of a log: names, paths, messages.

Run names, series names and file names are chosen by whoever wrote the log (or named the file),
and a report prints them in a terminal, a CI log, Markdown, HTML, XML and JSON. So before any of
them leaves the reader layer:

- control characters (C0, DEL, C1), line and paragraph separators, and the bidirectional
  overrides become visible escapes (``\\x1b``, ``\\u2028``): ESC[2J, OSC 8 links and OSC 52
  clipboard writes cannot reach a terminal, and a name cannot forge a new line of a report;
- bytes of a non-UTF-8 file name (Python keeps them as lone surrogates, which no UTF-8 output
  can encode) become ``\\xNN``, the same escape in every output format;
- a backslash stays a backslash (the escapes are for reading, not for round-tripping).

``excerpt`` is the only way file content may appear in a message: the first line, escaped, cut
short.
"""

from __future__ import annotations

import re

# C0 (tab included: it breaks table columns), DEL, C1, NEL, LS/PS, bidi embeddings/overrides and
# isolates, BOM/zero-width no-break space, lone surrogates.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]"
)


def _escape(m: re.Match[str]) -> str:
    c = ord(m.group())
    if 0xDC80 <= c <= 0xDCFF:  # surrogateescape: the original byte
        return f"\\x{c - 0xDC00:02x}"
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def printable(text: object) -> str:
    """``text`` with every unsafe character replaced by a visible escape (see module doc)."""
    s = text if isinstance(text, str) else str(text)
    return _UNSAFE.sub(_escape, s) if _UNSAFE.search(s) else s


def excerpt(text: str | bytes, limit: int = 60) -> str:
    """A short, escaped, printable excerpt of the first line of some file content."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    first = text.split("\n", 1)[0]
    more = len(first) > limit or "\n" in text.rstrip("\n")
    return repr_short(printable(first[:limit]) + ("..." if more else ""))


def repr_short(s: str) -> str:
    return "'" + s.replace("'", "\\'") + "'"
