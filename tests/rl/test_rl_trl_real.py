"""A real (tiny) TRL GRPO run on CPU: the keys TRL actually writes map to rl/ names, and its
trainer_state.json is judged as an RL run. Skipped when trl is not installed (it is not a
stabdiag dependency)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")
torch = pytest.importorskip("torch")

from stabdiag.diagnose import diagnose  # noqa: E402

MAKE_RUNS = Path(__file__).resolve().parents[2] / "benchmarks" / "rl" / "make_runs.py"
# TRL bookkeeping that is no RL signal and keeps its own name.
PLAIN = {
    "epoch",
    "step",
    "num_tokens",
    "step_time",
    "learning_rate",
    "grad_norm",
    "total_flos",
    "train_loss",
    "train_runtime",
    "train_samples_per_second",
    "train_steps_per_second",
}


@pytest.mark.slow
def test_tiny_grpo_run_keys_map_and_the_run_is_judged(tmp_path):
    spec = importlib.util.spec_from_file_location("make_runs", MAKE_RUNS)
    mr = importlib.util.module_from_spec(spec)
    sys.modules["make_runs"] = mr
    spec.loader.exec_module(mr)
    torch.set_num_threads(1)
    case = next(c for c in mr.CASES if c.name == "grpo_healthy")
    mr.grpo_like(case, tmp_path / "grpo", steps=3, seed=0)
    state = json.loads((tmp_path / "grpo" / "trainer_state.json").read_text())
    keys = {k for e in state["log_history"] for k in e}
    assert {
        "kl",
        "entropy",
        "reward",
        "completions/clipped_ratio",
        "clip_ratio/region_mean",
    } <= keys
    rep = diagnose([str(tmp_path / "grpo")], jobs=1)
    mapping = {raw: canon for raw, canon, _ in rep.runs[0].mapping}
    unmapped = {k for k in keys if mapping.get(k, k) == k} - PLAIN
    assert unmapped == set(), unmapped  # every RL key TRL 1.16 writes has an rl/ name
    assert mapping["loss"] == "rl/loss"
    assert not [f for f in rep.findings if f.kind in ("divergence", "stall", "loss-spike")]
