"""fairseq / metaseq logs: ``train_inner`` interval lines, epoch summaries, JSON lines, overflows.

Layout facts: research/formats.md section 5. The step is ``num_updates`` (not the ``N / M`` batch
counter inside the epoch). Interval keys are kept as written (``loss``, ``nll_loss``, ``gnorm``,
``loss_scale``, ``lr`` ...; fairseq losses are in bits). Epoch-summary train values are averages
over a whole epoch, so they get an ``_epoch`` suffix (``loss_epoch``; JSON ``train_loss`` ->
``loss_epoch``) and never compete with the interval series; valid keys stay ``valid_*``.
JSON values are mostly quoted strings and are parsed as numbers. ``overflow detected, setting
loss scale to: X`` lines become a skipped step and a ``loss_scale`` value at one past the last
``num_updates`` seen (each further overflow before the next record counts one more step).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from stabdiag.sources import textlog
from stabdiag.sources.raw import Lines, RawRun, parse_number

FORMAT = "fairseq"
SKIPPED = "skipped_step"

_INNER = re.compile(r"epoch \d+:\s+\d+\s*/\s*\d+\s+(\w+=.*)$")
_SUMMARY = re.compile(r"(?:^|\| )epoch \d+ \| (.*)$")
_JSON = re.compile(r"\|\s*(train_inner|train|valid\w*)\s*\|\s*(\{.*\})\s*$")
_OVERFLOW = re.compile(
    r"overflow detected, (?:ignoring gradient, )?setting (?:loss )?scale to:?"
    r"(?: to)?\s*([-+\d.eE]+|inf|nan)"
)
_SNIFF = re.compile(
    rb"(?m)\| (?:train_inner|fairseq\.trainer|valid) \||^\| epoch \d+[:|]"
    rb"|epoch \d+:\s+\d+ / \d+ loss="
)


looks_like = textlog.sniffer(_SNIFF)


def _num(raw: object) -> float | None:
    v = parse_number(raw.rstrip("%") if isinstance(raw, str) else raw)
    return v if isinstance(v, float) else None


def read(path: Path) -> list[RawRun]:
    log = textlog.TextLog(path)
    cols = textlog.Kept()
    last = 0  # last num_updates seen
    pending = 0  # overflows since then
    bad = Lines()
    for line in log:
        t = line.text
        if (m := _OVERFLOW.search(t)) is not None:
            pending += 1
            cols.add(last + pending, SKIPPED, 1.0)
            v = _num(m[1])
            if v is not None:
                cols.add(last + pending, "loss_scale", v)
            continue
        fields: list[tuple[str, object]] = []
        kind = "inner"
        if (m := _JSON.search(t)) is not None:
            try:
                obj = json.loads(m[2])
            except (ValueError, RecursionError):
                bad.add(line.number)
                continue
            kind = (
                "inner"
                if m[1] == "train_inner"
                else ("valid" if m[1].startswith("valid") else "epoch")
            )
            fields = list(obj.items())
        elif (m := _INNER.search(t)) is not None:
            fields = [tuple(kv.strip().split("=", 1)) for kv in m[1].split(",") if "=" in kv]
        elif (m := _SUMMARY.search(t)) is not None:
            kind = "valid" if "valid on" in m[1] else "epoch"
            for chunk in m[1].split("|"):
                parts = chunk.split()
                if len(parts) == 2:
                    fields.append((parts[0], parts[1]))
        else:
            continue
        values = {k: _num(v) for k, v in fields}
        step = values.get("num_updates")
        if step is None or not math.isfinite(step) or step != int(step) or abs(step) >= 2.0**63:
            bad.add(line.number)  # missing, nan, fractional or huge: this line only
            continue
        last, pending = int(step), 0
        for k, v in values.items():
            if v is None or k in ("num_updates", "epoch"):
                continue
            if kind == "epoch":
                k = (k[len("train_") :] if k.startswith("train_") else k) + "_epoch"
            cols.add(last, k, v)
    warnings = []
    if bad:
        warnings.append(bad.warning(str(path), "records without num_updates or bad JSON"))
    if log.failure:
        warnings.append(log.failure)
    return [cols.build(textlog.run_name(path), str(path), FORMAT, warnings=warnings)]
