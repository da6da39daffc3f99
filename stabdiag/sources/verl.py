"""verl console logs: ``step:N - key:value - key:value ...`` lines (``trainer.logger=['console']``).

verl's ``LocalLogger`` joins every numeric metric of a step as ``key:value`` with `` - ``; values
are ``pprint.pformat`` of Python or numpy scalars, so under numpy 2 a value may read
``np.float64(0.53)`` (older releases printed ``0.530``). Lines run under Ray carry a
``(TaskRunner pid=123)`` prefix. Non-numeric values and the occasional dict dump are ignored;
``nan``/``inf`` are kept. verl's file logger (``trainer.logger=['file']``) writes JSON lines
``{"step": N, "data": {...}}``, read by the JSONL reader; both spell metrics the same way and
both map through the RL section of ``aliases.py`` (``actor/entropy`` -> ``rl/entropy`` ...).
"""

from __future__ import annotations

import re
from pathlib import Path

from stabdiag.sources import textlog
from stabdiag.sources.raw import RawRun, parse_number

FORMAT = "verl-console"

# "step:12 - actor/entropy:0.5 - ..." after an optional Ray actor prefix "(TaskRunner pid=1) ".
_LINE = re.compile(r"(?:^|\)\s+)step:\s*(\d+)\s+-\s+(.*)$")
# Starts with a literal so a scan of a huge file (a 50 MB line) stays fast.
_SNIFF = re.compile(rb"step:\d+ - [\w@./-]+:[^ \n]")
_NP = re.compile(r"^(?:np\.)?(?:float|int)(?:16|32|64)?\((.*)\)$")


looks_like = textlog.sniffer(_SNIFF)


def _value(raw: str) -> float | None:
    s = raw.strip()
    m = _NP.match(s)
    if m:
        s = m.group(1)
    v = parse_number(s)
    return v if isinstance(v, float) else None


def read(path: Path) -> list[RawRun]:
    log = textlog.TextLog(path)
    cols = textlog.Kept()
    skipped = 0
    for line in log:
        m = _LINE.search(line.text)
        if m is None:
            continue
        step = int(m[1])
        for part in m[2].split(" - "):
            key, sep, raw = part.rpartition(":")
            if not sep or not key.strip():
                skipped += 1
                continue
            v = _value(raw)
            if v is None:
                skipped += 1
                continue
            cols.add(step, key.strip(), v)
    warnings = []
    if skipped:
        warnings.append(f"{path}: {skipped} non-numeric key:value fields ignored")
    if log.failure:
        warnings.append(log.failure)
    return [cols.build(textlog.run_name(path), str(path), FORMAT, warnings=warnings)]
