"""llm.c ``main.log`` (``s:N trl:X lr:Y norm:Z`` / ``s:N tel:X``), llm.c stdout, modded-nanogpt.

Layout facts: research/formats.md section 6. Three spellings of one idea, one reader:

- ``main.log`` (llm.c ``-o`` dir, early modded-nanogpt): ``s:<step> <key>:<value> ...``; keys kept
  as written (``trl``, ``tel``, ``lr``, ``norm``, ``eval``). A val and a train line may share a step.
- llm.c stdout: ``step   12/19560 | loss 3.2 (+0.12z)| norm 0.3 (+nanz)| lr 6e-4 | 120.5 ms | ...``;
  the ``(+nanz)`` z-scores are running-window statistics, not metrics, and are ignored.
- modded-nanogpt speed-run records: ``step:1/6000 train_loss:11.0091 train_time:24179ms
  step_avg:nanms``; ``nan`` in a timing field is a not-yet-defined average, not a failure, so
  non-finite timing values are dropped. The files start with the training script, so only lines
  that start with a record are data.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from stabdiag.sources import textlog
from stabdiag.sources.raw import Lines, RawRun, parse_number

FORMAT = "llmc"

_MAINLOG = re.compile(r"^s:(\d+)((?:\s+[A-Za-z_]+:\S+)+)\s*$")
_MODDED = re.compile(r"^step:(\d+)/\d+((?:\s+[A-Za-z_]+:\S+)+)\s*$")
_STDOUT = re.compile(r"^step\s+(\d+)/\d+\s*\|(.*)$")
_KV = re.compile(r"(?<![A-Za-z_])([A-Za-z_]+):(\S+)")  # lookbehind: linear on long words
_UNIT = re.compile(r"^(.*?)(ms|s|%)?$")
_TIMING = re.compile(r"time|avg|ms$")
_SNIFF = re.compile(
    rb"(?m)^(?:s:\d+ (?:trl|tel):|step:\d+/\d+ (?:train|val)_loss:|"
    rb"step\s+\d+/\d+ \| loss )"
)


looks_like = textlog.sniffer(_SNIFF)


def _value(raw: str) -> float | None:
    m = _UNIT.match(raw.strip().rstrip(","))
    v = parse_number(m.group(1) if m else raw)
    return v if isinstance(v, float) else None


def _stdout_fields(body: str) -> list[tuple[str, float]]:
    out = []
    for chunk in body.split("|"):
        chunk = re.sub(r"\([-+]?[\w.]+z\)", "", chunk).strip()  # drop (+1.23z) / (+nanz)
        parts = chunk.split()
        if len(parts) < 2:
            continue
        if parse_number(parts[0]) is not None and not isinstance(parse_number(parts[1]), float):
            key, raw = " ".join(parts[1:]), parts[0]  # "120.5 ms", "12345 tok/s"
            key = {"ms": "step time (ms)"}.get(key, key)
        else:
            key, raw = parts[0], parts[1]
        v = _value(raw)
        if v is not None:
            out.append((key, v))
    return out


def _step(digits: str) -> int | None:
    """The step, or None when Python cannot even parse it (over 4300 digits): that line is bad.
    Steps beyond int64 are left to from_rows, which drops them with its own warning."""
    try:
        return int(digits)
    except ValueError:
        return None


def read(path: Path) -> list[RawRun]:
    log = textlog.TextLog(path)
    cols = textlog.Kept()
    bad = Lines()
    for line in log:
        t = line.text.strip()
        m = _MAINLOG.match(t) or _MODDED.match(t)
        if m is not None:
            step, fields = _step(m[1]), [(k, _value(v)) for k, v in _KV.findall(m[2])]
        elif (m := _STDOUT.match(t)) is not None:
            step, fields = _step(m[1]), _stdout_fields(m[2])  # type: ignore[assignment]
        else:
            if t.startswith("s:") and t[2:3].isdigit():
                bad.add(line.number)
            continue
        if step is None:  # a step no int64 holds: this line is bad, the others stand
            bad.add(line.number)
            continue
        for key, v in fields:
            if v is None:
                continue
            if not math.isfinite(v) and _TIMING.search(key):
                continue
            cols.add(step, key, v)
    warnings = []
    if bad:
        warnings.append(bad.warning(str(path), "malformed s:N lines"))
    if log.failure:
        warnings.append(log.failure)
    return [cols.build(textlog.run_name(path), str(path), FORMAT, warnings=warnings)]
