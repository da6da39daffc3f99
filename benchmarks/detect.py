"""Detection benchmark: stabdiag's detectors vs production trainers' spike rules, side by side.

    python benchmarks/detect.py [--seeds 40] [--split dev|heldout|all] [--out benchmarks/results]

Seeds 0..N-1 generate the synthetic corpus (even = development half, odd = held-out half: only
evaluated, never tuned on); the clean real logs under ../shared/real_logs add false-alarm data;
four tiny `stabdiag train --inject` runs (LR spike + bad batch, seeds 0-3, split the same way) add
real events when cached (``--make-train`` trains them).
Writes detect.json and detect.md to --out and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import client_runs  # noqa: E402
import score_real  # noqa: E402
from stabbench import corpus, report, scoring  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=40)
    ap.add_argument("--split", choices=["dev", "heldout", "all"], default="all")
    ap.add_argument("--real", default=str(ROOT.parent / "shared" / "real_logs"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument(
        "--train-cache",
        default=str(Path.home() / ".cache" / "stabdiag-bench"),
        help="where `stabdiag train --inject` runs are cached (4 tiny CPU runs)",
    )
    ap.add_argument(
        "--make-train",
        action="store_true",
        help="train the missing cached runs first (~1 min each)",
    )
    ap.add_argument(
        "--client-cache",
        default=str(client_runs.CACHE),
        help="labelled `stabdiag train` scenarios (benchmarks/client_runs.py makes them)",
    )
    a = ap.parse_args()
    t0 = time.perf_counter()
    real = corpus.real_clean(a.real)
    splits = ["dev", "heldout"] if a.split == "all" else [a.split]
    results = {}
    for sp in splits:
        seeds = [s for s in range(a.seeds) if corpus.split_of(s) == sp]
        cases = (
            corpus.synthetic(seeds)
            + real
            + corpus.trained(
                [s for s in range(4) if corpus.split_of(s) == sp], a.train_cache, a.make_train
            )
        )
        results[sp] = scoring.evaluate(cases)
        print(
            report.text(
                results[sp],
                f"== {sp}: seeds {seeds[0]}..{seeds[-1]} ({len(seeds)}), "
                f"{len(cases)} runs, {results[sp]['labels']} events",
            )
        )
    goal = {sp: scoring.goal_check(r) for sp, r in results.items()}
    print("\ngoal:", json.dumps(goal, indent=1, default=str))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "detect.json").write_text(
        json.dumps({"seeds": a.seeds, "results": results, "goal": goal}, indent=1)
    )
    (out / "detect.md").write_text(
        report.markdown(
            results,
            goal,
            notes=(
                f"`python benchmarks/detect.py --seeds {a.seeds}`. Even seeds: development half; odd seeds: "
                "held-out half (never tuned on). Real clean logs are in both halves (false alarms only). "
                "FA/10k = false alarms per 10k clean steps; latency in steps (first flagged step - label onset).\n\n"
                "Corpus and rules: `benchmarks/stabbench/corpus.py` (event sizes start at 10 noise sigmas of their own "
                "curve), baselines and their sources: `benchmarks/stabbench/baselines.py`, matching: "
                "`benchmarks/stabbench/scoring.py`. Baselines are scored only on the classes they were built for. "
                "stabdiag's divergence and stall verdicts judge the whole log, so their latency is that of the "
                "onset they report, not of an online alarm; loss/grad spike onsets are causal."
            ),
        )
    )
    # Labelled real logs (every folder of ../shared/real_logs, our own labels) and labelled real
    # client runs, through the whole pipeline as a user runs it.
    real_scores, real_summary = score_real.score_all(Path(a.real), Path(a.client_cache))
    real_txt = score_real.text(real_scores, real_summary)
    print(
        "\n== real logs and real client runs (hand labels: benchmarks/real_labels.py, client_runs.py)"
    )
    print(real_txt)
    (out / "detect_real.json").write_text(
        json.dumps(
            {"folders": [s.__dict__ for s in real_scores], "summary": real_summary},
            indent=1,
            default=str,
        )
    )
    (out / "detect_real.md").write_text(
        "# Detection on labelled real logs and real client runs\n\n`python benchmarks/detect.py` "
        "(or `python benchmarks/score_real.py --client ~/.cache/stabdiag-bench/client`). Labels were "
        "written by reading each log before any detector was changed (benchmarks/real_labels.py); client "
        "runs are `stabdiag train` scenarios whose events are known from how they were made "
        "(benchmarks/client_runs.py). FA = findings at warning or above that no label or allowance "
        "covers; onset error = first step of the matching finding - label start.\n\n```\n"
        + real_txt
        + "\n```\n"
    )
    print(
        f"\nwrote {out}/detect.json, detect.md, detect_real.json, detect_real.md in {time.perf_counter() - t0:.1f}s"
    )


if __name__ == "__main__":
    main()
