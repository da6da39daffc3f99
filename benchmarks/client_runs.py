"""Real-client runs for the detection benchmark: `stabdiag train` scenarios with known events.

    python benchmarks/client_runs.py [--cache ~/.cache/stabdiag-bench/client] [--only NAME ...]

Each scenario is a tiny-preset run on the CPU (one thread) whose event is known from how it was
made, not from what the detectors say: a post-LN 12-layer model without warm-up (stalls at the
unigram level) beside its pre-LN twin, a high LR without QK-norm beside its QK-norm twin, fp16
with a scaler that probes every 25 steps (healthy) and fp16 with a gradient blown up mid-run
(real overflows), a high LR without warm-up on a cosine schedule (chaotic until the LR decays), and
an LR held 4x too high for 120 steps (a slow rise that recovers). Runs are cached; the labels
live in ``SCENARIOS`` and are scored by ``score_real.score_client``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_labels import ERROR, INFO, WARNING, Label  # noqa: E402

CACHE = Path(
    os.environ.get("STABDIAG_BENCH_CACHE", Path.home() / ".cache" / "stabdiag-bench" / "client")
)


@dataclass(frozen=True)
class Scenario:
    name: str
    sets: tuple[str, ...]
    labels: tuple[Label, ...] = ()
    inject: tuple[str, ...] = ()
    note: str = ""
    ranks: int = 1  # > 1: launched with torchrun --nproc_per_node ranks (gloo on the CPU)


def _lab(
    name: str, cls: str, a: int, b: int, lo: str = WARNING, hi: str = ERROR, note: str = ""
) -> Label:
    return Label(f"client:{name}", cls, a, b, min_severity=lo, max_severity=hi, note=note)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "postln12_nowarmup",
        ("n_layer=12", "norm_placement=post", "warmup_steps=0"),
        (
            _lab(
                "postln12_nowarmup",
                "stall",
                20,
                299,
                note="post-LN 12 layers, LR 3e-3 from step 0: stuck at the unigram level ~3.2 from "
                "step ~20 while its pre-LN twin reaches ~2",
            ),
        ),
    ),
    Scenario(
        "preln12_warmup",
        ("n_layer=12", "norm_placement=pre", "warmup_steps=30"),
        note="healthy twin of postln12_nowarmup",
    ),
    Scenario(
        "highlr_noqk",
        ("lr=0.05", "warmup_steps=0", "grad_clip=0"),
        (
            _lab(
                "highlr_noqk",
                "attn",
                0,
                299,
                note="LR 0.05 without QK-norm, warm-up or clipping: the max attention logit jumps "
                "from ~0.1 to ~700 within 20 steps and sits at ~1100 (one-hot attention); the "
                "loss still creeps down (val 3.37 -> 2.98) but lags the QK-norm twin (2.80): "
                "attention-logit growth, not a flat stall",
            ),
        ),
    ),
    Scenario(
        "highlr_qk",
        ("lr=0.05", "warmup_steps=0", "grad_clip=0", "qk_norm=true"),
        note="twin with QK-norm",
    ),
    Scenario(
        "fp16_probing",
        ("precision=fp16", "loss_scale_growth_interval=25"),
        (
            _lab(
                "fp16_probing",
                "fp16",
                0,
                299,
                lo=INFO,
                hi=INFO,
                note="GradScaler growth every 25 steps: each growth is probed and undone",
            ),
        ),
    ),
    Scenario(
        "fp16_overflow",
        ("precision=fp16",),
        (
            _lab(
                "fp16_overflow",
                "fp16",
                150,
                160,
                note="gradients x1e6 at steps 150-153: four real overflows in a row",
            ),
        ),
        inject=tuple(f"grad_scale@{s}:factor=1e6" for s in (150, 151, 152, 153)),
    ),
    Scenario(
        "highlr03_noclip",
        ("lr=0.3", "warmup_steps=0", "grad_clip=0", "decay=cosine", "min_lr=0"),
        (
            _lab(
                "highlr03_noclip",
                "loss_spike",
                1,
                10,
                note="5.4 -> 12.9 at step 2, back within 7 steps",
            ),
            _lab(
                "highlr03_noclip", "lr_schedule", 0, 2, note="LR 0.3 from step 0, spike at step 2"
            ),
            _lab(
                "highlr03_noclip", "attn", 0, 299, note="max attention logit 50 -> 1.4e4: saturated"
            ),
        ),
        note="made as a runaway; what happened is a start-up spike, then the loss sits near the "
        "unigram level (~3) with saturated attention: labelled as what happened",
    ),
    Scenario(
        "runaway_lr1",
        ("lr=1.0", "warmup_steps=0", "grad_clip=0", "decay=cosine", "min_lr=0"),
        (
            _lab(
                "runaway_lr1",
                "divergence",
                1,
                190,
                lo=ERROR,
                note="LR 1.0 from step 0: the loss jumps from 5.4 to ~70 and stays chaotic (25-120) "
                "until the cosine LR falls to ~0.3 near step 180, then settles at ~3.2",
            ),
            _lab("runaway_lr1", "loss_spike", 1, 190, note="the same event seen as a spike"),
            _lab("runaway_lr1", "lr_schedule", 0, 2, note="no warm-up at LR 1.0"),
            _lab("runaway_lr1", "attn", 0, 299, note="max attention logit to 7e5"),
        ),
    ),
    Scenario(
        "slow_divergence",
        ("lr=3e-3", "steps=400"),
        (
            _lab(
                "slow_divergence",
                "divergence",
                150,
                300,
                lo=WARNING,
                note="LR x30 held for 120 steps from 150: the loss climbs back towards the unigram "
                "level for the whole window, then recovers",
            ),
            _lab(
                "slow_divergence",
                "loss_spike",
                150,
                160,
                note="the first steps at 30x: 2.5 -> 5.8 at step 154",
            ),
            _lab(
                "slow_divergence",
                "attn",
                150,
                399,
                note="the 30x LR also blows the max attention logit up from ~5 to ~1300",
            ),
        ),
        inject=("lr_spike@150:factor=30,steps=120",),
    ),
    Scenario(
        "torchrun4_badrank",
        ("steps=300",),
        (
            Label(
                "client:torchrun4_badrank",
                "rank",
                150,
                169,
                min_severity=WARNING,
                note="4 ranks under torchrun; rank 2 alone gets random bytes for 20 steps from 150",
            ),
        ),
        inject=("bad_batch@150:steps=20,rank=2",),
        ranks=4,
    ),
)


def run_dir(name: str, cache: Path = CACHE) -> Path:
    return cache / name


def make(sc: Scenario, cache: Path = CACHE) -> Path:
    """Train the scenario into ``cache/<name>`` unless it is there (one thread, no analysis)."""
    d = run_dir(sc.name, cache)
    if (d / "metrics.csv").exists() and (d / "run.json").exists():
        return d
    launch = (
        [sys.executable, "-m", "stabdiag"]
        if sc.ranks == 1
        else [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(sc.ranks),
            "-m",
            "stabdiag",
        ]
    )
    cmd = [
        *launch,
        "train",
        "--preset",
        "tiny",
        "--out",
        str(cache),
        "--name",
        sc.name,
        "--no-analyze",
        "--restart",
        "--set",
        "threads=1",
        "--set",
        "seed=0",
    ]
    for s in sc.sets:
        cmd += ["--set", s]
    for i in sc.inject:
        cmd += ["--inject", i]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    print(f"{sc.name}: trained in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=str(CACHE))
    ap.add_argument("--only", nargs="*", default=None)
    a = ap.parse_args()
    for sc in SCENARIOS:
        if a.only and sc.name not in a.only:
            continue
        make(sc, Path(a.cache))


if __name__ == "__main__":
    main()
