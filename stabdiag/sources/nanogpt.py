"""nanoGPT ``train.py`` stdout: ``iter N: loss X, time Yms, mfu Z%`` and eval lines.

Layout facts: research/formats.md section 6. ``iter`` lines give the (single micro-batch) train
loss every ``log_interval``; ``step N: train loss X, val loss Y`` lines give eval estimates every
``eval_interval``. The eval-estimated train loss is kept as ``train loss`` (not aliased, so it
never competes with the per-iteration ``loss``); ``val loss`` is the validation loss. ``mfu -100%``
is nanoGPT's "not measured yet" sentinel and is dropped. Resumed runs continue ``iter`` numbers.
"""

from __future__ import annotations

import re
from pathlib import Path

from stabdiag.sources import textlog
from stabdiag.sources.raw import Lines, RawRun, parse_int, parse_number

FORMAT = "nanogpt"

_NUM = r"([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf))"
_ITER = re.compile(
    r"^iter (\d+): loss " + _NUM + r"(?:, time " + _NUM + r"ms)?"
    r"(?:, mfu " + _NUM + r"%)?",
    re.IGNORECASE,
)
_EVAL = re.compile(r"^step (\d+): train loss " + _NUM + r", val loss " + _NUM, re.IGNORECASE)
_SNIFF = re.compile(
    rb"(?m)^(?:iter \d+: loss [-\d.naif]+, time |step \d+: train loss [-\d.naif]+,"
    rb" val loss )"
)


looks_like = textlog.sniffer(_SNIFF)


def _f(x: str | None) -> float | None:
    v = parse_number(x)
    return v if isinstance(v, float) else None


def read(path: Path) -> list[RawRun]:
    log = textlog.TextLog(path)
    cols = textlog.Kept()
    bad = Lines()
    for line in log:
        t = line.text.strip()
        m = _ITER.match(t) or _EVAL.match(t)
        if m is not None and parse_int(m[1]) is None:  # a step no table can hold: skip, count
            bad.add(line.number)
            continue
        if (m := _ITER.match(t)) is not None:
            step = int(m[1])
            for name, raw in (("loss", m[2]), ("time (ms)", m[3]), ("mfu (%)", m[4])):
                v = _f(raw)
                if v is not None and not (name == "mfu (%)" and v == -100.0):
                    cols.add(step, name, v)
        elif (m := _EVAL.match(t)) is not None:
            step = int(m[1])
            for name, raw in (("train loss", m[2]), ("val loss", m[3])):
                v = _f(raw)
                if v is not None:
                    cols.add(step, name, v)
    warnings = [w for w in [log.failure] if w]
    if bad:
        warnings.insert(0, bad.warning(str(path), "lines with an impossible step"))
    return [cols.build(textlog.run_name(path), str(path), FORMAT, warnings=warnings)]
