"""How the reports say things in English: counts with their plural, severity tallies, plain text.

Every report used to add its own ``s`` (``f"{n} run{'s' if n != 1 else ''}"``), and the copies
disagreed: one header read "1 error, 8 warning", another "1 metrics". One helper per phrase keeps
every renderer saying a count the same way. Pure functions on strings; any layer may import them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# Words a count leaves alone ("2 info", not "2 infos") and irregular plurals.
_UNCOUNTABLE = frozenset({"info"})
_IRREGULAR = {"entry": "entries", "series": "series", "index": "indices", "matrix": "matrices"}


def plural(word: str, n: int) -> str:
    """``word`` in the form that goes with a count of ``n`` (``run`` -> ``runs`` unless n == 1)."""
    if n == 1 or word in _UNCOUNTABLE:
        return word
    return _IRREGULAR.get(word, word + "s")


def count(n: int, word: str, many: str | None = None) -> str:
    """``1 run``, ``2 runs``, ``0 runs``, ``3 info``: a number and its noun, agreeing (``many``
    for a phrase whose plural is not the word plus ``s``: ``drop or skip`` -> ``drops or skips``)."""
    if many is not None:
        return f"{n} {word if n == 1 else many}"
    return f"{n} {plural(word, n)}"


SEVERITY_WORDS = ("error", "warning", "info")


def tally(counts: Mapping[str, int], *, none: str = "no findings") -> str:
    """``1 error, 8 warnings, 2 info``: the non-zero severity counts, worst first; ``none`` when
    all are zero (a report of zero errors and zero warnings says so in two words, not six)."""
    parts = [count(counts.get(k, 0), k) for k in SEVERITY_WORDS if counts.get(k, 0)]
    return ", ".join(parts) if parts else none


# ``literal`` and :role:`target` (``:class:`X```, ``:func:`f```, ``:data:`~m.X```): the
# docstring markup our detectors and Config fields are written in, for docs generators.
_RST_LITERAL = re.compile(r"``(.+?)``")
_RST_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`]+)`")


def plain(text: str) -> str:
    """Docstring text (reStructuredText) as a terminal reads it: ````x```` and ``:func:`x``` become
    ```x```. Used where a docstring is printed (``stabdiag explain``), so the docstrings keep the
    markup their documentation build needs and the terminal never shows doubled backticks."""
    return _RST_LITERAL.sub(r"`\1`", _RST_ROLE.sub(r"`\1`", text))
