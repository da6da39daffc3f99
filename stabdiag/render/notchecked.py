"""Why a check did not run, in a few words per reason, for the human reports.

A detector that cannot judge a run says why in its ``Skipped.reason``, written for that
detector ("no train/max_attn_logit series with 20 finite points"). Printed one per detector, a
run's "not checked" block is as long as the detector list; printed under one heading ("metric
not logged") it told a stall check that had too few loss points it had no loss. So each reason
is put into the words that are true for this run, and detectors with the same words share a
line:

- the reason names metrics and the run logged none of them: "metric not logged";
- it names a metric the run did log: the metric has too few finite points for the check;
- anything else (one rank, not a preference run, a detector error): the detector's own words.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from functools import lru_cache

from stabdiag.findings import Skipped

NOT_LOGGED = "metric not logged"

# Metric names as detectors write them: lower-case namespace, then "/" parts (train/loss,
# rl/length/mean, train/grad_norm/<group>); "GRPO/RLOO" and "vLLM/SGLang" are not metrics.
_METRIC = re.compile(r"(?<![\w/])[a-z][a-z0-9_]*(?:/[a-z0-9_.<>]+)+")
_WITH_POINTS = re.compile(r"with (\d+) finite points")


@dataclass(frozen=True)
class NotChecked:
    """Detectors that did not run on one run for one reason (in report order)."""

    reason: str
    kinds: tuple[str, ...]


def reason_for(skip: Skipped, logged: Collection[str]) -> str:
    """The true reason ``skip`` did not run, given the metrics the run ``logged``."""
    return _reason(skip.reason, logged)


def _reason(reason: str, logged: Collection[str]) -> str:
    text = reason.strip()
    if not text.startswith("no "):
        return text
    named = _METRIC.findall(text)
    present = [m for m in named if m in logged]
    if not present:
        return NOT_LOGGED
    need = _WITH_POINTS.search(text)
    if need:  # "no X series with N finite points" where X was logged: too few of them
        return f"{present[0]} has too few finite points ({need.group(1)} needed)"
    return text


def group(skipped: Iterable[Skipped], logged: Collection[str]) -> list[NotChecked]:
    """``skipped`` of one run, grouped by their true reason, groups in order of first appearance."""
    return list(_group(tuple((s.kind, s.reason) for s in skipped), frozenset(logged)))


@lru_cache(maxsize=1024)
def _group(skipped: tuple[tuple[str, str], ...], logged: frozenset[str]) -> tuple[NotChecked, ...]:
    # Cached: the runs of one tree mostly skip the same detectors for the same reasons, and a
    # report of 100,000 runs asked the regexes above again for each of them.
    by_reason: dict[str, list[str]] = {}
    for kind, reason in skipped:
        kinds = by_reason.setdefault(_reason(reason, logged), [])
        if kind not in kinds:
            kinds.append(kind)
    return tuple(NotChecked(reason, tuple(kinds)) for reason, kinds in by_reason.items())
