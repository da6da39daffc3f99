"""RL detection benchmark: stabdiag vs rldoctor and rlprobe on the same labelled RL runs.

    python benchmarks/rl/bench.py [--runs DIR] [--peers VENV] [--out benchmarks/results]

Runs: the real TRL runs made by ``benchmarks/rl/make_runs.py`` (labels in ``DIR/labels.json``),
the real public GRPO run ``../shared/real_logs/trl_grpo_chaos_economy`` (clean: its KL, reward
and length curves are a real run's, no event labelled), and writer-shaped verl/TRL logs for the
failures a CPU TRL run cannot provoke (the trainer/engine log-prob gap needs vLLM; TRL 1.16 has no
PPO critic), built here by code and reported in their own rows.

An event counts as found when a finding of its kind (severity warning or worse) is reported on
its run; every other warning-or-worse finding is a false alarm (for the peers: findings of their
detectors mapped to no label of the run). The peers are run from a separate virtualenv
(``--peers``, default /tmp/rlpeers with ``rldoctor==0.2.0`` and ``rlprobe==0.1.0``): rldoctor
reads ``trainer_state.json`` itself; rlprobe reads only its own recordings, so each log is
replayed through rlprobe's TRL callback mapping (``rlprobe.integrations.trl._map_logs``) into a
``Recorder``, which is what its TRL integration would have recorded live.
Writes rl.json and rl.md to --out and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from stabdiag.diagnose import diagnose

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RUNS = Path.home() / ".cache" / "stabdiag-bench" / "rl"
REAL = ROOT.parent / "shared" / "real_logs" / "trl_grpo_chaos_economy"

RLDOCTOR = {
    "advantage_collapse": "rl-zero-signal",
    "plateau": "rl-zero-signal",
    "entropy_collapse": "rl-entropy-collapse",
    "length_pathology": "rl-length-hacking",
    "clip_saturation": "rl-clip-saturation",
    "kl_drift": "rl-kl-blowup",
}
RLPROBE = {
    "KL_BLOWUP": "rl-kl-blowup",
    "REF_DRIFT_ASYMMETRY": "rl-kl-blowup",
    "ENTROPY_COLLAPSE": "rl-entropy-collapse",
    "REWARD_HACK_LENGTH": "rl-length-hacking",
    "TRUNCATION_STARVE": "rl-length-hacking",
    "CLIP_SATURATION": "rl-clip-saturation",
    "DEGENERATE_GROUPS": "rl-zero-signal",
    "ADVANTAGE_COLLAPSE": "rl-zero-signal",
    "REWARD_STD_DEATH": "rl-zero-signal",
    "VALUE_DIVERGENCE": "rl-value-divergence",
}

_CONVERT = r"""
import json, sys, types
stub = types.ModuleType("transformers"); stub.TrainerCallback = object
sys.modules.setdefault("transformers", stub)
from rlprobe.integrations.trl import _map_logs
from rlprobe.recorder import Recorder
state = json.load(open(sys.argv[1]))
rec = Recorder(sys.argv[2], algorithm=sys.argv[3], capture_env=False, install_handlers=False)
for e in state["log_history"]:
    if "train_runtime" in e or "step" not in e:
        continue
    rec.log_step(int(e["step"]), **_map_logs(e))
rec.close()
"""


# --- writer-shaped logs for what CPU TRL cannot provoke -------------------------------------


def _trl_state(d: Path, hist: list[dict]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    p = d / "trainer_state.json"
    p.write_text(json.dumps({"global_step": hist[-1]["step"], "log_history": hist}))
    return p


def _verl_jsonl(path: Path, rows: list[dict]) -> None:
    """verl's file logger: {"step": N, "data": {...}} per line (rldoctor reads this form)."""
    path.write_text(
        "".join(
            json.dumps({"step": i, "data": {k: float(v) for k, v in r.items()}}) + "\n"
            for i, r in enumerate(rows, start=1)
        )
    )


def synthetic(root: Path) -> list[dict]:
    """verl PPO with a diverging critic, TRL+vLLM with a growing log-prob gap, and a healthy verl
    PPO run; shapes follow the writers' formats (verl console lines, TRL log_history)."""
    rng = np.random.default_rng(0)
    n = 120
    cases = []
    bad, ok = [], []
    for i in range(1, n + 1):
        common = {
            "actor/pg_loss": 0.01 * rng.standard_normal(),
            "actor/ppo_kl": 0.001,
            "actor/pg_clipfrac": 0.02,
            "actor/grad_norm": 0.4,
            "response_length/mean": 300 + rng.standard_normal(),
            "response_length/clip_ratio": 0.01,
        }
        bad.append(
            {
                **common,
                "actor/entropy": 1.1 - 0.002 * i,
                "critic/score/mean": 0.3 + 0.001 * i,
                "critic/vf_explained_var": 0.5 - 0.015 * max(0, i - 40),
                "critic/vf_loss": 0.3 * (1.08 ** max(0, i - 50)),
            }
        )
        ok.append(
            {
                **common,
                "actor/entropy": 1.1 - 0.001 * i,
                "critic/score/mean": 0.3 + 0.002 * i,
                "critic/vf_explained_var": min(0.8, 0.1 + 0.01 * i),
                "critic/vf_loss": 0.3 * np.exp(-i / 60),
            }
        )
    for name, rows, labels in (
        ("verl_ppo_critic", bad, {"rl-value-divergence"}),
        ("verl_ppo_healthy", ok, set()),
    ):
        p = root / name
        p.mkdir(parents=True, exist_ok=True)
        lines = [
            f"(TaskRunner pid=7) step:{i} - "
            + " - ".join(f"{k}:np.float64({v!r})" for k, v in r.items())
            for i, r in enumerate(rows, start=1)
        ]
        (p / "train.log").write_text("\n".join(lines) + "\n")
        _verl_jsonl(p / "metrics.jsonl", rows)
        cases.append(
            {
                "name": name,
                "path": p / "train.log",
                "labels": labels,
                "trl": False,
                "jsonl": p / "metrics.jsonl",
            }
        )
    hist = []
    for i in range(1, n + 1):
        gap = 0.01 + 0.4 * max(0, i - 30) / n
        hist.append(
            {
                "loss": 0.02 * rng.standard_normal(),
                "grad_norm": 0.3,
                "learning_rate": 1e-6,
                "completions/mean_length": 200.0,
                "completions/max_length": 512.0,
                "completions/clipped_ratio": 0.02,
                "reward": 0.3 + 0.002 * i,
                "reward_std": 0.3,
                "frac_reward_zero_std": 0.1,
                "kl": 0.001 * i,
                "entropy": 0.9,
                "clip_ratio/region_mean": 0.0,
                "sampling/sampling_logp_difference/mean": gap,
                "sampling/sampling_logp_difference/max": 10 * gap,
                "sampling/importance_sampling_ratio/min": 0.1,
                "sampling/importance_sampling_ratio/mean": 1 - gap / 4,
                "sampling/importance_sampling_ratio/max": 3 + 20 * gap,
                "step": i,
            }
        )
    p = _trl_state(root / "trl_vllm_logp_gap", hist)
    cases.append(
        {"name": "trl_vllm_logp_gap", "path": p, "labels": {"rl-logprob-mismatch"}, "trl": True}
    )
    return cases


# --- running the tools ----------------------------------------------------------------------


def run_stabdiag(path: Path) -> tuple[list[dict], float]:
    t0 = time.perf_counter()
    rep = diagnose([str(path)], jobs=1)
    dt = time.perf_counter() - t0
    return [
        {"kind": f.kind, "severity": f.severity.label, "step": f.step_start, "message": f.message}
        for f in rep.findings
    ], dt


def run_rldoctor(venv: Path, state: Path) -> list[dict]:
    out = subprocess.run(
        [str(venv / "bin" / "rl-doctor"), "diagnose", str(state), "-f", "json", "--no-color"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    data = json.loads(out.stdout)
    res = []
    for f in data.get("findings", []):
        sev = str(f.get("severity", "")).upper()
        if sev in ("WARNING", "CRITICAL"):
            res.append(
                {
                    "detector": f.get("detector"),
                    "kind": RLDOCTOR.get(f.get("detector")),
                    "severity": sev.lower(),
                    "summary": f.get("summary") or f.get("title"),
                }
            )
    return res


def run_rlprobe(venv: Path, state: Path, algorithm: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        rec = Path(tmp) / "rec"
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", _CONVERT, str(state), str(rec), algorithm],
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )
        out = subprocess.run(
            [str(venv / "bin" / "rlprobe"), "doctor", str(rec), "--json"],
            capture_output=True,
            text=True,
            timeout=300,
        )
    res = []
    for f in json.loads(out.stdout or "[]"):
        sev = str(f.get("severity", "")).lower()  # rlprobe: info, warn, critical
        if sev in ("warn", "warning", "critical"):
            res.append(
                {
                    "detector": f.get("signature_id"),
                    "kind": RLPROBE.get(f.get("signature_id")),
                    "severity": sev,
                    "step": f.get("first_step"),
                    "summary": f.get("explanation"),
                }
            )
    return res


def score(
    findings: list[dict], labels: set[str], stabdiag: bool, also: frozenset[str] = frozenset()
) -> dict:
    """Found labels, missed labels, and false alarms (findings of neither a label nor an ``also`` kind)."""
    alarms = [f for f in findings if (not stabdiag) or f["severity"] in ("warning", "error")]
    found = sorted({f["kind"] for f in alarms if f["kind"] in labels})
    false = [f for f in alarms if f["kind"] not in labels and f["kind"] not in also]
    steps = {
        k: [f["step"] for f in alarms if f["kind"] == k and f.get("step") is not None]
        for k in found
    }
    return {
        "found": found,
        "first_step": {
            k: min(v) if v else None for k, v in steps.items()
        },  # rldoctor reports no step
        "missed": sorted(labels - set(found)),
        "false_alarms": len(false),
        "false_kinds": sorted({str(f.get("kind") or f.get("detector")) for f in false}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--runs", default=str(DEFAULT_RUNS), help="runs made by make_runs.py (with labels.json)"
    )
    ap.add_argument("--real", default=str(REAL), help="the real GRPO run (skipped when absent)")
    ap.add_argument(
        "--peers", default="/tmp/rlpeers", help="virtualenv with rldoctor and rlprobe ('' to skip)"
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()
    runs = Path(a.runs)
    labels = (
        json.loads((runs / "labels.json").read_text()) if (runs / "labels.json").is_file() else {}
    )
    cases = []
    for name, info in labels.items():
        state = runs / name / "trainer_state.json"
        if state.is_file():
            cases.append(
                {
                    "name": name,
                    "path": state,
                    "labels": set(info["label"].split()),
                    "also": frozenset(info.get("also", "").split()),
                    "trl": True,
                    "algorithm": "dpo" if info["trainer"] == "dpo" else info["trainer"],
                    "kind": "real TRL",
                }
            )
    if Path(a.real).is_dir():
        cases.append(
            {
                "name": "trl_grpo_chaos_economy (public)",
                "path": Path(a.real) / "trainer_state.json",
                "labels": set(),
                "trl": True,
                "algorithm": "grpo",
                "kind": "real public",
            }
        )
    tmp = Path(tempfile.mkdtemp(prefix="stabdiag-rl-bench-"))
    for c in synthetic(tmp):
        cases.append({**c, "algorithm": "grpo" if c["trl"] else "ppo", "kind": "writer-shaped"})
    venv = Path(a.peers) if a.peers else None
    peers = (
        venv is not None
        and (venv / "bin" / "rl-doctor").exists()
        and (venv / "bin" / "rlprobe").exists()
    )
    rows = []
    for c in cases:
        print(f"  {c['name']} ...", file=sys.stderr, flush=True)
        sd, secs = run_stabdiag(c["path"])
        row = {
            "name": c["name"],
            "kind": c["kind"],
            "labels": sorted(c["labels"]),
            "also": sorted(c.get("also", ())),
            "seconds": round(secs, 3),
            "stabdiag": score(sd, c["labels"], True, c.get("also", frozenset())),
            "stabdiag_findings": sd,
        }
        if peers and c["trl"]:
            rd = run_rldoctor(venv, c["path"])
            rp = run_rlprobe(venv, c["path"], c["algorithm"])
            row |= {
                "rldoctor": score(rd, c["labels"], False, c.get("also", frozenset())),
                "rldoctor_findings": rd,
                "rlprobe": score(rp, c["labels"], False, c.get("also", frozenset())),
                "rlprobe_findings": rp,
            }
        elif peers and c.get(
            "jsonl"
        ):  # verl: rldoctor reads its file logger; rlprobe has no verl reader
            rd = run_rldoctor(venv, c["jsonl"])
            row |= {
                "rldoctor": score(rd, c["labels"], False, c.get("also", frozenset())),
                "rldoctor_findings": rd,
            }
        rows.append(row)
    tools = ["stabdiag"] + (["rldoctor", "rlprobe"] if peers else [])
    summary = {}
    for group in ("real", "all"):
        sel = [r for r in rows if group == "all" or r["kind"] != "writer-shaped"]
        summary[group] = {}
        for t in tools:
            judged = [r for r in sel if t in r]
            events = sum(len(r["labels"]) for r in judged)
            summary[group][t] = {
                "runs": len(judged),
                "events": events,
                "found": sum(len(r[t]["found"]) for r in judged),
                "false_alarms": sum(r[t]["false_alarms"] for r in judged),
                "healthy_runs": sum(1 for r in judged if not r["labels"]),
                "healthy_runs_warned": sum(
                    1 for r in judged if not r["labels"] and r[t]["false_alarms"]
                ),
            }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rl.json").write_text(
        json.dumps({"rows": rows, "summary": summary}, indent=1, default=str)
    )
    md = markdown(rows, summary, tools)
    (out / "rl.md").write_text(md)
    print(md)


def markdown(rows: list[dict], summary: dict, tools: list[str]) -> str:
    lines = [
        "# RL detection: stabdiag vs rldoctor 0.2.0 and rlprobe 0.1.0",
        "",
        "`python benchmarks/rl/bench.py` on the runs of `benchmarks/rl/make_runs.py` (TRL 1.16, CPU, tiny "
        "LM), the public GRPO run and three writer-shaped logs. Found = a warning-or-worse finding of the "
        "labelled kind (the event the run was built to show); false alarm = any other warning-or-worse "
        "finding, except kinds the curves visibly show as well ('also seen', checked by eye in the logged "
        "values, listed per run), which count neither way. Peers' detectors are mapped to kinds in "
        "`benchmarks/rl/bench.py`; 'real' = the TRL runs and the public run, 'all' adds the writer-shaped logs.",
        "",
        "| group | tool | runs | events found | false alarms | healthy runs warned |",
        "|---|---|---|---|---|---|",
    ]
    for g, per in summary.items():
        for t, s in per.items():
            lines.append(
                f"| {g} | {t} | {s['runs']} | {s['found']}/{s['events']} | {s['false_alarms']} | "
                f"{s['healthy_runs_warned']}/{s['healthy_runs']} |"
            )
    lines += [
        "",
        "| run | source | labels | " + " | ".join(tools) + " |",
        "|---|---|---|" + "---|" * len(tools),
    ]
    for r in rows:
        cells = []
        for t in tools:
            if t not in r:
                cells.append("n/a")
                continue
            s = r[t]
            txt = "found " + ", ".join(s["found"]) if s["found"] else ""
            if s["missed"]:
                txt += ("; " if txt else "") + "missed " + ", ".join(s["missed"])
            if s["false_alarms"]:
                txt += (
                    "; " if txt else ""
                ) + f"{s['false_alarms']} FA ({', '.join(s['false_kinds'])})"
            cells.append(txt or "clean")
        lines.append(
            f"| {r['name']} | {r['kind']} | {', '.join(r['labels']) or 'healthy'}"
            + (f" (also seen: {', '.join(r['also'])})" if r["also"] else "")
            + " | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
