"""Find restarts: a series' step goes back (a resume from an older checkpoint) within one run.

Why per rewind point and not per series: a resume rewinds every series at once
(tb_torch_duplicate_steps: each tag goes 99 -> 90), and that is one restart. A series rewinding
joins the open restart unless that series was already written since the restart began.
Exact repeats of a step count only for the series in ``repeat_counts`` (per-step training
metrics): bookkeeping series such as ``epoch`` legitimately repeat a step (HF eval entries,
Lightning validation rows).

One restart per episode: rewinds that happen before the run has got back above the step it had
reached (a resume that crashed and was resumed again, or a log whose step counts down) extend
the open episode instead of starting new ones, and at most MAX_EPISODES are reported per run
(a 50,000-row countdown used to give 50,000 findings).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_EPISODES = 50
_SMALL = 256  # runs up to this many values are pre-checked in Python, larger ones with numpy


@dataclass(frozen=True)
class Restart:
    """One rewind of a run's step counter (a resume from an older checkpoint), in write order."""

    index: int  # write position of the first value after the rewind
    step: int  # the step the run resumed at
    prev_max: int  # the highest step logged before the rewind


def _none_back(codes: np.ndarray, steps: np.ndarray, repeat_counts: np.ndarray) -> bool:
    """True when no series can have gone back: steps never decrease in write order (so no
    series' step does) and no ``repeat_counts`` series writes one step twice. The common case,
    answered in a few array operations instead of a pass per series (issue 13 R4)."""
    if not (steps[1:] >= steps[:-1]).all():
        return False
    if len(steps) <= _SMALL:  # a set of (step, series) pairs: a few microseconds for small runs
        flags = np.asarray(repeat_counts, dtype=bool).tolist()
        seen: set[tuple[int, int]] = set()
        for s, c in zip(steps.tolist(), codes.tolist(), strict=True):
            if flags[c]:
                if (s, c) in seen:
                    return False
                seen.add((s, c))
        return True
    flagged = np.asarray(repeat_counts, dtype=bool)[codes]
    if not flagged.any():
        return True
    s, c = steps[flagged], codes[flagged]
    if len(s) < 2 or (s[1:] > s[:-1]).all():
        return True
    order = np.lexsort((c, s))  # steps are sorted already; equal steps ordered by series
    s, c = s[order], c[order]
    return not ((s[1:] == s[:-1]) & (c[1:] == c[:-1])).any()


def find(codes: np.ndarray, steps: np.ndarray, repeat_counts: np.ndarray) -> list[Restart]:
    """Restarts of one run (one rank) in write order: a series' step below (or, for
    ``repeat_counts``, equal to) its previous write. ``repeat_counts[code]`` is a bool."""
    if len(steps) < 2 or _none_back(codes, steps, repeat_counts):
        return []
    return _find(codes, steps, repeat_counts)


def _find(codes: np.ndarray, steps: np.ndarray, repeat_counts: np.ndarray) -> list[Restart]:
    """``find`` a series at a time (the reference ``_none_back`` must agree with)."""
    n = len(steps)
    if n < 2:
        return []
    order = np.argsort(codes, kind="stable")
    sc, ss = codes[order], steps[order]
    cuts = np.flatnonzero(sc[1:] != sc[:-1]) + 1
    rewinds: list[int] = []
    per_code: dict[int, np.ndarray] = {}
    for lo, hi in zip(np.concatenate(([0], cuts)), np.concatenate((cuts, [n])), strict=True):
        s = ss[lo:hi]
        if len(s) < 2:
            continue
        prev = s[:-1]  # the series' previous write, so 90, 91, ... after a rewind is no rewind
        hit = s[1:] <= prev if repeat_counts[sc[lo]] else s[1:] < prev
        if hit.any():
            rewinds += order[lo + 1 : hi][hit].tolist()
            per_code[int(sc[lo])] = np.sort(order[lo:hi])
    if not rewinds:
        return []
    run_max = np.maximum.accumulate(steps)
    out: list[Restart] = []
    start = -1
    joined: set[int] = set()
    for i in sorted(rewinds):
        c = int(codes[i])
        writes = per_code[c]
        pos = np.searchsorted(writes, i)
        written_since = start >= 0 and pos > 0 and writes[pos - 1] >= start
        if start >= 0 and c not in joined and not written_since:
            joined.add(c)
            last = out[-1]
            out[-1] = Restart(last.index, min(last.step, int(steps[i])), last.prev_max)
            continue
        if out and int(run_max[i - 1]) == out[-1].prev_max:
            # still below where the episode began (the run never caught up): same episode
            last = out[-1]
            out[-1] = Restart(last.index, min(last.step, int(steps[i])), last.prev_max)
            start, joined = i, {c}
            continue
        start, joined = i, {c}
        out.append(Restart(i, int(steps[i]), int(run_max[i - 1])))
        if len(out) >= MAX_EPISODES:
            break
    return out
