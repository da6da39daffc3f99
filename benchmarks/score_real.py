"""Score stabdiag's verdicts on every folder of ../shared/real_logs against ``real_labels``.

    python benchmarks/score_real.py [--real ../shared/real_logs] [--json out.json]

Per folder: labels found / missed, false alarms (findings at warning or above that no label or
allowance covers) and error false alarms; per class: precision, recall, F1, false alarms per 10k
clean steps and the onset error (first step of the matching finding - label start) in steps.
The whole pipeline runs (``diagnose`` on the folder), as a user would run it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import real_labels as RL  # noqa: E402

from stabdiag.diagnose import diagnose  # noqa: E402
from stabdiag.findings import Finding, Severity  # noqa: E402

SEV = {RL.INFO: Severity.INFO, RL.WARNING: Severity.WARNING, RL.ERROR: Severity.ERROR}
TOL_FRAC = 0.02  # a finding matches a label when it overlaps it widened by 2 % of the run's steps


@dataclass
class FolderScore:
    folder: str
    found: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    false_alarms: list[str] = field(default_factory=list)
    error_false_alarms: list[str] = field(default_factory=list)
    onset_errors: dict[str, int] = field(default_factory=dict)
    clean_steps: int = 0
    per_class: dict[str, dict[str, int]] = field(default_factory=dict)


def classes_of(f: Finding) -> set[str]:
    """The event classes a finding stands for: a loss spike that never recovered is a divergence."""
    out = set(RL.KIND_CLASSES.get(f.kind, {f.kind}))
    if f.kind == "loss-spike" and f.evidence.get("recovered") is False:
        out.add("divergence")
    return out


def _run_of(report, label_run: str) -> list[str]:
    return [r.name for r in report.runs if label_run in r.name or label_run in r.path]


def _overlaps(f: Finding, a: int, b: int, tol: int) -> bool:
    s = f.step_start if f.step_start is not None else -(10**12)
    e = f.step_end if f.step_end is not None else s
    return s <= b + tol and e >= a - tol


def score_folder(root: Path, folder: str) -> FolderScore:
    return score_case(
        folder,
        root / folder,
        [lab for lab in RL.LABELS if lab.folder == folder],
        [a for a in RL.ALLOWED if a.folder == folder],
    )


def score_client(cache: Path) -> list[FolderScore]:
    """The `stabdiag train` scenarios of client_runs.py that are in ``cache`` (made there first)."""
    import client_runs as CR

    out = []
    for sc in CR.SCENARIOS:
        d = CR.run_dir(sc.name, cache)
        if (d / "metrics.csv").exists():
            out.append(score_case(f"client:{sc.name}", d, list(sc.labels), []))
    return out


def score_case(folder: str, path: Path, labels: list, allowed: list) -> FolderScore:
    report = diagnose([path], jobs=1)
    out = FolderScore(folder)
    spans = {r.name: (r.steps or (0, 0)) for r in report.runs}
    used: set[int] = set()
    tally: dict[str, dict[str, int]] = defaultdict(
        lambda: {"tp": 0, "fp": 0, "labels": 0, "found": 0}
    )
    for lab in labels:
        runs = _run_of(report, lab.run) if lab.run else [r.name for r in report.runs]
        tag = f"{lab.cls}@{lab.start}" + (f" ({lab.run})" if lab.run else "")
        tally[lab.cls]["labels"] += 1
        hits = []
        for i, f in enumerate(report.findings):
            if f.run not in runs or lab.cls not in classes_of(f):
                continue
            a, b = spans.get(f.run, (0, 0))
            if _overlaps(f, lab.start, lab.end, int(TOL_FRAC * max(1, b - a))):
                hits.append((i, f))
        good = [
            (i, f) for i, f in hits if SEV[lab.min_severity] <= f.severity <= SEV[lab.max_severity]
        ]
        used.update(i for i, _ in hits)
        if good:
            out.found.append(tag)
            tally[lab.cls]["found"] += 1
            first = min(f.step_start for _, f in good if f.step_start is not None)
            out.onset_errors[tag] = int(first - lab.start)
        else:
            why = (
                "not found"
                if not hits
                else "severity " + "/".join(sorted({f.severity.label for _, f in hits}))
            )
            out.missed.append(f"{tag}: {why}")
    for i, f in enumerate(report.findings):
        cls = min(classes_of(f))
        if i in used:
            tally[cls]["tp"] += f.severity >= Severity.WARNING
            continue
        ok = any(
            (not a.run or a.run in f.run)
            and f.kind in a.kinds
            and f.severity <= SEV[a.max_severity]
            and _overlaps(f, a.start, a.end, 0)
            for a in allowed
        )
        if ok or f.severity < Severity.WARNING:
            continue
        msg = f"{f.severity.label} {f.kind}@{f.step_start} {f.run}: {f.message[:110]}"
        out.false_alarms.append(msg)
        tally[cls]["fp"] += 1
        if f.severity >= Severity.ERROR:
            out.error_false_alarms.append(msg)
    for r in report.runs:
        if r.steps:
            out.clean_steps += r.steps[1] - r.steps[0] + 1
    out.clean_steps -= sum(lab.end - lab.start + 1 for lab in labels)
    out.per_class = {k: dict(v) for k, v in tally.items()}
    return out


def summarize(scores: list[FolderScore]) -> dict:
    cls: dict[str, dict[str, float]] = defaultdict(
        lambda: {"tp": 0, "fp": 0, "labels": 0, "found": 0}
    )
    for s in scores:
        for k, v in s.per_class.items():
            for key in ("tp", "fp", "labels", "found"):
                cls[k][key] += v[key]
    clean = sum(max(0, s.clean_steps) for s in scores)
    rows = {}
    for k, v in sorted(cls.items()):
        p = v["tp"] / (v["tp"] + v["fp"]) if v["tp"] + v["fp"] else None
        r = v["found"] / v["labels"] if v["labels"] else None
        f1 = 2 * p * r / (p + r) if p and r else (0.0 if p is not None and r is not None else None)
        rows[k] = {
            "precision": p,
            "recall": r,
            "f1": f1,
            "labels": v["labels"],
            "found": v["found"],
            "false_alarms": v["fp"],
            "fa_per_10k": 1e4 * v["fp"] / clean if clean else None,
        }
    labels = sum(v["labels"] for v in cls.values())
    found = sum(v["found"] for v in cls.values())
    fas = sum(len(s.false_alarms) for s in scores)
    onset = [abs(e) for s in scores for e in s.onset_errors.values()]
    return {
        "classes": rows,
        "labels": labels,
        "found": found,
        "false_alarms": fas,
        "error_false_alarms": sum(len(s.error_false_alarms) for s in scores),
        "fa_per_10k": 1e4 * fas / clean if clean else None,
        "clean_steps": clean,
        "onset_error_median": sorted(onset)[len(onset) // 2] if onset else None,
    }


def score_all(root: Path, client_cache: Path | None = None) -> tuple[list[FolderScore], dict]:
    folders = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    scores = [score_folder(root, f) for f in folders]
    if client_cache is not None:
        scores += score_client(client_cache)
    return scores, summarize(scores)


def _fmt(x) -> str:
    return "-" if x is None else (f"{x:.2f}" if isinstance(x, float) else str(x))


def text(scores: list[FolderScore], summary: dict) -> str:
    lines = []
    for s in scores:
        status = "ok" if not (s.missed or s.false_alarms) else "MISS/FA"
        lines.append(
            f"{s.folder:36s} {status:8s} found {len(s.found)}/{len(s.found) + len(s.missed)}"
            f"  false alarms {len(s.false_alarms)} (error {len(s.error_false_alarms)})"
        )
        lines += [f"    missed  {m}" for m in s.missed]
        lines += [f"    FA      {m}" for m in s.false_alarms]
    lines.append("")
    lines.append(
        f"{'class':15s} {'P':>5s} {'R':>5s} {'F1':>5s} {'labels':>6s} {'FA':>4s} {'FA/10k':>7s}"
    )
    for k, v in summary["classes"].items():
        lines.append(
            f"{k:15s} {_fmt(v['precision']):>5s} {_fmt(v['recall']):>5s} {_fmt(v['f1']):>5s} "
            f"{v['labels']:6d} {v['false_alarms']:4d} {_fmt(v['fa_per_10k']):>7s}"
        )
    lines.append(
        f"labels found {summary['found']}/{summary['labels']}, false alarms {summary['false_alarms']} "
        f"({_fmt(summary['fa_per_10k'])} per 10k clean steps), error false alarms "
        f"{summary['error_false_alarms']}, median |onset error| {summary['onset_error_median']} steps"
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--real", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "real_logs")
    )
    ap.add_argument("--json", default=None)
    ap.add_argument(
        "--client", default=None, help="also score the client_runs.py scenarios cached here"
    )
    a = ap.parse_args()
    scores, summary = score_all(Path(a.real), Path(a.client) if a.client else None)
    print(text(scores, summary))
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {"folders": [s.__dict__ for s in scores], "summary": summary}, indent=1, default=str
            )
        )


if __name__ == "__main__":
    main()
