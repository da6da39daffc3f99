"""torchtitan stdout (``components/metrics.py``): ``step: N  loss: X  grad_norm: Y  ...`` lines.

Layout facts: research/formats.md section 6. Lines may carry torchrun's ``[rankN]:`` prefix and
ANSI colour codes (both removed by ``textlog``); ``tps`` has thousands separators, ``memory`` is
``9.46GiB(64.99%)`` (kept as GiB), ``mfu`` a percentage. ``validate step: N  loss: X`` lines give
``validate loss``. With several ranks logging, identical lines are kept once; when ranks print
different values, every value is kept with its rank (for rank-divergence checks).
"""

from __future__ import annotations

import re
from pathlib import Path

from stabdiag.sources import textlog
from stabdiag.sources.raw import Lines, RawRun, parse_int, parse_number

FORMAT = "torchtitan"

_STEP = re.compile(r"(?:^|\s)(validate )?step:\s*(\d+)\s+(.*)$")
# Keys are short: the bound keeps a long line without a colon linear (unbounded *? was quadratic).
_KV = re.compile(r"([A-Za-z_][\w()/ %]{0,63}?):\s+([-+\d.,eE]+|nan|inf|-inf)")
_SNIFF = re.compile(rb"(?:\[titan\]|- root - INFO -)[^\n]*\bstep:\s*\d+\s+loss:")


_COLOUR = re.compile(rb"\x1b\[[0-9;]*m")
_DEEP_TITAN = re.compile(rb"\[titan\][^\n]*step:")
_DEEP_STEP = re.compile(rb"\bstep:\s*(?:\x1b\[[0-9;]*m)*\s*\d+")


def looks_like(path: Path, head: bytes | str) -> bool:
    """torchtitan colours its numbers: the head is matched without ANSI colour codes; a deep scan
    (past the head) needs a ``[titan]`` step line early and a step line anywhere."""
    if isinstance(head, str):
        head = head.encode("utf-8", "replace")
    if _SNIFF.search(_COLOUR.sub(b"", head)):
        return True
    return (
        path.suffix.lower() in textlog.PLAIN_SUFFIXES
        and textlog.scan(path, _DEEP_TITAN, limit=8 << 20)
        and textlog.scan(path, _DEEP_STEP, limit=64 << 20)
    )


def read(path: Path) -> list[RawRun]:
    log = textlog.TextLog(path)
    cols = textlog.Kept()
    ranks: set[int] = set()
    seen: set[tuple[int, str, str]] = set()
    dups = 0
    bad = Lines()
    for line in log:
        m = _STEP.search(line.text)
        if m is None or "loss" not in m[3]:
            continue
        step = parse_int(m[2])
        if step is None:  # a step no table can hold: skip the line, count it, keep the rest
            bad.add(line.number)
            continue
        val, body = bool(m[1]), " ".join(m[3].split())
        key = (step, "v" if val else "t", body)
        if key in seen:
            dups += 1
            continue
        seen.add(key)
        for k, raw in _KV.findall(" " + body):
            v = parse_number(raw.replace(",", ""))
            if not isinstance(v, float):
                continue
            name = k.strip()
            cols.add(step, f"validate {name}" if val else name, v, rank=line.rank)
            if line.rank is not None:
                ranks.add(line.rank)
    warnings = [f"{path}: {dups} lines repeated by several ranks ignored"] if dups else []
    if bad:
        warnings.append(bad.warning(str(path), "lines with an impossible step"))
    if log.failure:
        warnings.append(log.failure)
    per_rank = len(ranks) > 1
    return [cols.build(textlog.run_name(path), str(path), FORMAT, rank=per_rank, warnings=warnings)]
