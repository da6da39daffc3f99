"""Pause Python's cyclic garbage collector while a report of many runs is built or rendered.

Analysing 100,000 small runs makes millions of small objects that all live until the report is
done (series, findings, skips, summaries, report lines). Each gen-2 collection walks every one
of them and frees nothing: on that tree collections were a quarter of the parent process's time
(issue 13 R4). Pausing is scoped: the collector's state is restored on exit, and any cyclic
garbage made meanwhile is collected by the next collection after it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block; the previous state afterwards."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
