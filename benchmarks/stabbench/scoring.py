"""Event-level scoring of detections against labels.

A detection is a step range plus the event classes it claims. It matches a label of one of its
classes when the ranges overlap, the label widened by a tolerance of ``TOL_POINTS`` log intervals
on each side. A detection that matches no label but overlaps some label of another class is
neutral (a loss spike flagged during a grad explosion is a true consequence, not a false alarm);
one that overlaps no label at all is a false alarm. Latency of a matched label = first step of
its earliest matching detection - label onset (floored at 0), in steps.

Per class and detector: precision, recall, F1, median and p90 latency, and false alarms per 10k
clean steps (steps of the corpus outside every label).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from stabbench import baselines as bl
from stabbench.corpus import CLASSES, Case
from stabdiag.detectors import run_detectors
from stabdiag.detectors._stats import segments
from stabdiag.findings import Finding, Severity

TOL_POINTS = 2
OURS = "stabdiag"
OUR_KINDS = (
    "loss-spike",
    "grad-spike",
    "grad-explosion",
    "fp16-overflow",
    "divergence",
    "stall",
    "nonfinite",
)
SPIKE_CLASSES = ("loss_spike", "grad_spike")


@dataclass(frozen=True)
class Detection:
    start: int
    end: int
    classes: frozenset[str]
    primary: str
    counts_for: frozenset[str] = frozenset()  # precision tallies it counts in (default: primary)

    def tallies(self) -> frozenset[str]:
        return self.counts_for or frozenset({self.primary})


def _classes(f: Finding) -> list[Detection]:
    k, a, b = f.kind, f.step_start, f.step_end
    if a is None:
        return []
    b = a if b is None else b
    if k == "loss-spike":
        cl = {"loss_spike"} | ({"divergence"} if f.evidence.get("recovered") is False else set())
        return [Detection(a, b, frozenset(cl), "loss_spike")]
    if k == "grad-spike":  # one finding per run: its spike points, adjacent ones as one event
        pts = np.asarray(f.evidence.get("spike_steps") or [a], dtype=np.int64)
        gap = 3 * int(
            f.evidence.get("log_interval")
            or max(1, int(np.min(np.diff(pts))) if len(pts) > 1 else 1)
        )
        cut = np.flatnonzero(np.diff(pts) > gap) + 1
        return [
            Detection(int(g[0]), int(g[-1]), frozenset({"grad_spike"}), "grad_spike")
            for g in np.split(pts, cut)
        ]
    if k == "grad-explosion":
        return [Detection(a, b, frozenset({"grad_explosion"}), "grad_explosion")]
    if k == "fp16-overflow":  # info = "benign start-up search / probing": not an alarm
        return (
            [Detection(a, b, frozenset({"fp16"}), "fp16")] if f.severity >= Severity.WARNING else []
        )
    if k == "divergence":
        return (
            [Detection(a, b, frozenset({"divergence"}), "divergence")]
            if f.metric.startswith("train/")
            else []
        )
    if k == "stall":
        return [Detection(a, b, frozenset({"stall"}), "stall")]
    if k == "nonfinite":
        return [Detection(a, b, frozenset({"divergence", "loss_spike"}), "divergence")]
    return []


def our_detections(case: Case, configs=None) -> list[Detection]:
    kinds = [k for k in OUR_KINDS if case.kinds is None or k in case.kinds]
    findings, _ = run_detectors([case.run], select=kinds, configs=configs)
    return [d for f in findings for d in _classes(f)]


def baseline_detections(case: Case, b: bl.Baseline, gap: int = 3) -> list[Detection]:
    if case.kinds is not None and b.kind not in case.kinds:
        return []
    s = case.run.get(b.metric)
    if s is None:
        return []
    mask = b.flag(np.asarray(s.values, dtype=np.float64))
    st, en = segments(mask)
    if not len(st):
        return []
    keep = np.concatenate([[True], st[1:] - en[:-1] - 1 > gap])
    idx = np.flatnonzero(keep)
    last = np.concatenate([idx[1:] - 1, [len(st) - 1]])
    cl = frozenset(b.classes)
    return [
        Detection(int(s.steps[st[i]]), int(s.steps[en[j]]), cl, b.classes[0], cl)
        for i, j in zip(idx, last, strict=True)
    ]


@dataclass
class Tally:
    tp: int = 0
    fp: int = 0
    neutral: int = 0
    labels: int = 0
    found: int = 0
    latencies: list[int] = field(default_factory=list)

    def add(self, o: Tally) -> None:
        self.tp += o.tp
        self.fp += o.fp
        self.neutral += o.neutral
        self.labels += o.labels
        self.found += o.found
        self.latencies += o.latencies


def score_case(case: Case, dets: Sequence[Detection], classes: Iterable[str]) -> dict[str, Tally]:
    """Tallies per class (and '*' for all given classes together) for one case."""
    tol = TOL_POINTS * case.interval
    classes = tuple(classes)
    out = {c: Tally() for c in (*classes, "*")}
    for d in dets:
        keys = [c for c in d.tallies() if c in classes]
        if not keys:
            continue
        near = [lab for lab in case.labels if d.start <= lab.end + tol and d.end >= lab.start - tol]
        hit_own = {lab.cls for lab in near if lab.cls in d.classes}
        for key in (*keys, "*"):
            t = out[key]
            # a tally's TP: it matched a label of that class (or of any of its classes for the
            # detection's own primary tally, and for the all-classes tally)
            if key in hit_own or (
                hit_own and (key == "*" or (key == d.primary and not d.counts_for))
            ):
                t.tp += 1
            elif near:
                t.neutral += 1
            else:
                t.fp += 1
    for lab in case.labels:
        if lab.cls not in classes:
            continue
        ms = [
            d.start
            for d in dets
            if lab.cls in d.classes and d.start <= lab.end + tol and d.end >= lab.start - tol
        ]
        for key in (lab.cls, "*"):
            t = out[key]
            t.labels += 1
            if ms:
                t.found += 1
                t.latencies.append(max(0, min(ms) - lab.start))
    return out


def clean_steps(case: Case) -> int:
    """Steps of the case outside every (widened) label."""
    n = case.n_steps
    tol = TOL_POINTS * case.interval
    covered = 0
    spans = sorted((max(0, lab.start - tol), lab.end + tol) for lab in case.labels)
    cur_a, cur_b = None, None
    for a, b in spans:
        if cur_b is None or a > cur_b:
            if cur_b is not None:
                covered += cur_b - cur_a + 1
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_b is not None:
        covered += cur_b - cur_a + 1
    return max(0, n - covered)


def metrics(t: Tally, clean: int) -> dict:
    p = t.tp / (t.tp + t.fp) if t.tp + t.fp else (1.0 if t.labels else None)
    r = t.found / t.labels if t.labels else None
    f1 = (
        2 * p * r / (p + r)
        if p is not None and r is not None and p + r > 0
        else (0.0 if p is not None and r is not None else None)
    )
    lat = np.asarray(t.latencies, dtype=np.float64)
    return {
        "precision": p,
        "recall": r,
        "f1": f1,
        "labels": t.labels,
        "found": t.found,
        "tp": t.tp,
        "fp": t.fp,
        "neutral": t.neutral,
        "latency_median": float(np.median(lat)) if lat.size else None,
        "latency_p90": float(np.percentile(lat, 90)) if lat.size else None,
        "false_alarms_per_10k": 1e4 * t.fp / clean if clean else None,
    }


def evaluate(
    cases: Sequence[Case], baselines: Sequence[bl.Baseline] = bl.BASELINES, configs=None
) -> dict:
    """{"classes": {cls: {detector: metrics}}, "overall": {detector: metrics}, "clean_steps": N, ...}"""
    clean = sum(clean_steps(c) for c in cases)
    ours = {c: Tally() for c in (*CLASSES, "*")}
    theirs = {b.name: {c: Tally() for c in (*b.classes, "*")} for b in baselines}
    for case in cases:
        for k, t in score_case(case, our_detections(case, configs), CLASSES).items():
            ours[k].add(t)
        for b in baselines:
            for k, t in score_case(case, baseline_detections(case, b), b.classes).items():
                theirs[b.name][k].add(t)
    classes: dict[str, dict] = {c: {OURS: metrics(ours[c], clean)} for c in CLASSES}
    for b in baselines:
        for c in b.classes:
            classes[c][b.name] = metrics(theirs[b.name][c], clean)
    overall = {OURS: metrics(ours["*"], clean)}
    for b in baselines:
        overall[b.name] = metrics(theirs[b.name]["*"], clean)
    return {
        "classes": classes,
        "overall": overall,
        "clean_steps": clean,
        "cases": len(cases),
        "labels": sum(len(c.labels) for c in cases),
    }


def goal_check(res: dict) -> dict:
    """The issue's goal, criterion by criterion."""
    ov = res["overall"][OURS]
    gaps = {}
    for c, rows in res["classes"].items():
        others = [m["f1"] for name, m in rows.items() if name != OURS and m["f1"] is not None]
        if others and rows[OURS]["f1"] is not None:
            gaps[c] = rows[OURS]["f1"] - max(others)
    lat = [res["classes"][c][OURS]["latency_median"] for c in SPIKE_CLASSES]
    return {
        "overall_f1": ov["f1"],
        "overall_f1_ok": (ov["f1"] or 0) >= 0.95,
        "margin_over_best_baseline": gaps,
        "margin_ok": all(g >= 0.05 for g in gaps.values()),
        "false_alarms_per_10k": ov["false_alarms_per_10k"],
        "false_alarms_ok": (ov["false_alarms_per_10k"] or 0) <= 0.1,
        "spike_latency_median": dict(zip(SPIKE_CLASSES, lat, strict=True)),
        "latency_ok": all(x is not None and x <= 2 for x in lat),
    }
