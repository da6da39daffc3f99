"""Each RL kind on writer-shaped logs: it fires on its failure, stays silent on the benign cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rl_util import (
    analyze,
    dpo_run,
    grpo_curves,
    grpo_run,
    kinds,
    trl_entries,
    verl_console,
    write_trainer_state,
)

from stabdiag.findings import Severity

W = Severity.WARNING


def by_kind(report, kind):
    return [f for f in report.findings if f.kind == kind]


def skipped_reason(report, kind):
    return next((s.reason for s in report.skipped if s.kind == kind), None)


def test_healthy_grpo_run_is_judged_clean(tmp_path):
    rep = analyze(grpo_run(tmp_path / "ok"))
    assert kinds(rep, W) == set()
    assert rep.judged_runs() == ["ok"]
    assert "RL run" in rep.runs[0].judged_reason


def test_policy_objective_from_negative_to_zero_is_not_a_divergence(tmp_path):
    """GRPO's loss moves around 0 by design; read as a language-model loss it 'diverges'."""

    def objective(c):
        n = len(c["loss"])
        c["loss"] = -0.5 * np.exp(-np.arange(n) / 30.0) + 0.002 * np.random.default_rng(
            1
        ).standard_normal(n)

    rep = analyze(grpo_run(tmp_path / "grpo", objective))
    assert not {"divergence", "stall", "loss-spike"} & kinds(rep)
    assert kinds(rep, W) == set()
    # the very same numbers without RL keys are a training loss, and the pre-training rules judge them
    c = grpo_curves()
    objective(c)
    plain = write_trainer_state(
        tmp_path / "plain", [{"loss": float(v), "step": i + 1} for i, v in enumerate(c["loss"])]
    )
    assert "divergence" in kinds(analyze(plain), W)


def test_beta_zero_logs_no_kl_and_that_is_not_a_finding(tmp_path):
    rep = analyze(grpo_run(tmp_path / "b0", drop=("kl",)))
    assert kinds(rep, W) == set()
    assert "beta = 0" in skipped_reason(rep, "rl-kl-blowup")


def test_kl_blowup_with_falling_reward_is_an_error(tmp_path):
    def blow(c):
        n = len(c["kl"])
        c["kl"] = 1e-3 * np.exp(np.linspace(0, np.log(5000), n))  # 1e-3 -> 5 nats/token
        c["reward"] = c["rewards/{fn}/mean"] = 0.5 - 0.3 * np.linspace(0, 1, n)

    (f,) = by_kind(analyze(grpo_run(tmp_path / "kl", blow)), "rl-kl-blowup")
    assert f.severity == Severity.ERROR and f.evidence["kl_late"] > 1
    assert "fell" in f.message


def test_kl_that_buys_reward_is_not_a_blowup(tmp_path):
    def grow(c):
        c["kl"] = np.linspace(0, 1.8, len(c["kl"]))  # the reward of the fixture keeps rising

    assert by_kind(analyze(grpo_run(tmp_path / "kl", grow)), "rl-kl-blowup") == []


def test_entropy_collapse_early_is_an_error_and_a_falling_trend_is_projected(tmp_path):
    def collapse(c):
        n = len(c["entropy"])
        c["entropy"] = np.maximum(3.5 * np.exp(-np.arange(n) / 12.0), 0.02)

    (f,) = by_kind(analyze(grpo_run(tmp_path / "col", collapse)), "rl-entropy-collapse")
    assert f.severity == Severity.ERROR and f.evidence["collapse_step"] < 75

    def falling(c):
        n = len(c["entropy"])
        c["entropy"] = 3.5 - 2.0 * np.arange(n) / n
        c["reward"] = c["rewards/{fn}/mean"] = np.full(n, 0.4) + 0.01 * np.sin(
            np.arange(n)
        )  # stalled

    (g,) = by_kind(analyze(grpo_run(tmp_path / "fall", falling)), "rl-entropy-collapse")
    assert g.severity == W and 150 < g.evidence["projected_floor_step"] < 300
    assert "at about step" in g.message


def test_length_hacking_and_truncation_only(tmp_path):
    def hack(c):
        n = len(c["reward"])
        c["completions/mean_length"] = np.minimum(48, 20 + 40 * np.arange(n) / n)
        c["completions/max_length"] = np.full(n, 48.0)
        c["completions/clipped_ratio"] = np.minimum(1, 0.05 + 1.2 * np.arange(n) / n)
        c["reward"] = c["rewards/{fn}/mean"] = c["completions/mean_length"] / 48

    (f,) = by_kind(analyze(grpo_run(tmp_path / "len", hack)), "rl-length-hacking")
    assert f.severity == Severity.ERROR and f.evidence["cap"] == 48

    def truncated(c):  # like the real Chaos-Economy run: mostly cut at the cap, reward falling
        n = len(c["reward"])
        c["completions/mean_length"] = np.full(n, 47.0)
        c["completions/max_length"] = np.full(n, 48.0)
        c["completions/clipped_ratio"] = np.linspace(0.9, 1.0, n)
        c["reward"] = c["rewards/{fn}/mean"] = np.linspace(0, -0.5, n)

    (g,) = by_kind(analyze(grpo_run(tmp_path / "cut", truncated)), "rl-length-hacking")
    assert g.severity == Severity.INFO and g.evidence["truncation_only"]


@pytest.mark.parametrize("level, verdict", [(0.0, "none"), (1.0, "all")])
def test_zero_signal_tells_too_hard_from_too_easy(tmp_path, level, verdict):
    def flat(c):
        n = len(c["reward"])
        c["reward"] = c["rewards/{fn}/mean"] = np.full(n, level)
        c["reward_std"] = c["rewards/{fn}/std"] = np.zeros(n)
        c["frac_reward_zero_std"] = np.ones(n)

    (f,) = by_kind(analyze(grpo_run(tmp_path / verdict, flat)), "rl-zero-signal")
    assert f.severity == Severity.ERROR and f.evidence["pass"] == verdict


def test_zero_signal_on_rloo_where_frac_zero_std_is_taken_after_the_kl_penalty(tmp_path):
    def rloo(c):
        n = len(c["reward"])
        c["rewards/{fn}/mean"] = np.zeros(n)
        c["rewards/{fn}/std"] = np.zeros(n)
        c["reward"] = -0.01 * np.abs(
            np.random.default_rng(2).standard_normal(n)
        )  # KL-penalised, never equal
        c["reward_std"] = 0.005 + np.zeros(n)
        c["frac_reward_zero_std"] = np.zeros(n)
        c["loss"] = np.full(n, 1e-9)  # RLOO's loss is ~0 by construction

    (f,) = by_kind(analyze(grpo_run(tmp_path / "rloo", rloo)), "rl-zero-signal")
    assert f.evidence["fraction"] == 1.0


def test_clip_saturation_and_on_policy_zero_clip(tmp_path):
    def clipped(c):
        n = len(c["reward"])
        v = np.where(np.arange(n) > n // 3, 0.3, 0.02)
        c["clip_ratio/region_mean"], c["clip_ratio/high_mean"], c["clip_ratio/low_mean"] = (
            v,
            v * 0.8,
            v * 0.2,
        )

    (f,) = by_kind(analyze(grpo_run(tmp_path / "clip", clipped)), "rl-clip-saturation")
    assert f.severity == W and "upper" in f.message
    assert (
        by_kind(analyze(grpo_run(tmp_path / "onpolicy")), "rl-clip-saturation") == []
    )  # all zeros: benign


def test_logprob_mismatch(tmp_path):
    def gap(c):
        n = len(c["reward"])
        c["sampling/sampling_logp_difference/mean"] = np.linspace(0.01, 0.4, n)
        c["sampling/importance_sampling_ratio/max"] = np.linspace(1.5, 8, n)

    (f,) = by_kind(analyze(grpo_run(tmp_path / "gap", gap)), "rl-logprob-mismatch")
    assert f.metric == "rl/logp_diff/mean" and f.severity == W

    def small(c):
        c["sampling/sampling_logp_difference/mean"] = np.full(len(c["reward"]), 0.01)

    assert by_kind(analyze(grpo_run(tmp_path / "small", small)), "rl-logprob-mismatch") == []
    rep = analyze(grpo_run(tmp_path / "none"))
    assert "vLLM" in skipped_reason(rep, "rl-logprob-mismatch")


def test_value_divergence_from_a_verl_console_log(tmp_path):
    n = 60
    rows = [
        {
            "actor/entropy": 1.2,
            "actor/pg_loss": 0.01,
            "critic/score/mean": 0.3,
            "critic/vf_explained_var": 0.4 - 0.02 * i,
            "critic/vf_loss": 0.5 * (1.15 ** max(0, i - 20)),
            "response_length/mean": 300.0,
        }
        for i in range(n)
    ]
    rep = analyze(verl_console(tmp_path / "ppo.log", rows))
    got = {f.metric: f for f in by_kind(rep, "rl-value-divergence")}
    assert set(got) == {"rl/value/explained_var", "rl/value/loss"}
    assert got["rl/value/loss"].severity == Severity.ERROR


def test_dpo_overfitting_needs_eval_and_spares_healthy_dpo(tmp_path):
    (f,) = by_kind(analyze(dpo_run(tmp_path / "over", overfit=True)), "rl-preference-overfit")
    assert f.severity == Severity.ERROR and f.evidence["best_step"] <= 28
    assert kinds(analyze(dpo_run(tmp_path / "fine", overfit=False)), W) == set()
    rep = analyze(dpo_run(tmp_path / "noeval", overfit=True, with_eval=False))
    assert "held-out" in skipped_reason(rep, "rl-preference-overfit")
    assert not {"divergence", "loss-spike"} & kinds(rep)  # the DPO loss is not a pre-training loss


def test_infinite_reward_is_reported_though_the_loss_stays_finite(tmp_path):
    def inf(c):
        c["reward"] = c["reward"].copy()
        c["reward"][[40, 41, 90]] = np.inf
        c["rewards/{fn}/mean"] = c["reward"]

    p = grpo_run(tmp_path / "inf", inf)
    assert "Infinity" in p.read_text()  # what json.dump writes, as HF does
    found = {f.metric: f for f in by_kind(analyze(p), "rl-nonfinite")}
    assert found["rl/reward"].severity == Severity.ERROR and found["rl/reward"].step_start == 41
    assert "policy loss stayed finite" in found["rl/reward"].message


def test_a_crashed_four_step_run_is_read_and_the_checks_say_why_not(tmp_path):
    entries = trl_entries(grpo_curves(4))
    entries[-1]["kl"] = float("nan")
    rep = analyze(write_trainer_state(tmp_path / "crash", entries, summary=False))
    assert by_kind(rep, "rl-nonfinite")  # the NaN KL at step 4 is still found
    reason = skipped_reason(rep, "rl-entropy-collapse")
    assert reason is not None and "only 4" in reason
    assert rep.runs[0].steps == (1, 4)


def test_missing_keys_are_listed_not_checked(tmp_path):
    entries = [
        {k: v for k, v in e.items() if k in ("loss", "reward", "step")}
        for e in trl_entries(grpo_curves(40))
    ]
    rep = analyze(write_trainer_state(tmp_path / "sparse", entries))
    skipped = {s.kind for s in rep.skipped}
    assert {"rl-kl-blowup", "rl-entropy-collapse", "rl-length-hacking", "rl-zero-signal"} <= skipped
    assert rep.judged_runs() == []  # nothing judged: never an all-clear on what was not read


def test_rl_run_findings_carry_framework_remedies(tmp_path):
    def flat(c):
        n = len(c["reward"])
        c["reward"] = c["rewards/{fn}/mean"] = np.zeros(n)
        c["reward_std"] = c["rewards/{fn}/std"] = np.zeros(n)

    rep = analyze(grpo_run(tmp_path / "z", flat))
    text = json.dumps([r.to_dict() for r in rep.remedies])
    assert "grader" in text and "num_generations" in text


def test_real_grpo_run_stays_free_of_warnings(real_logs):
    rep = analyze(real_logs / "trl_grpo_chaos_economy")
    assert kinds(rep, W) == set(), [f.message for f in rep.findings]
    assert rep.judged_runs() == ["trl_grpo_chaos_economy"]
    assert "divergence" not in kinds(rep)


@pytest.mark.parametrize("seed", range(6))
def test_healthy_curves_of_other_seeds_and_lengths_raise_nothing(tmp_path, seed):
    n = [40, 80, 150, 300, 600, 1000][seed]
    rep = analyze(grpo_run(tmp_path / f"s{seed}", n=n, seed=seed))
    assert kinds(rep, W) == set(), [f.message for f in rep.findings]


def test_rl_checks_do_not_apply_to_a_pretraining_run(tmp_path):
    entries = [
        {"loss": 3.0 * (i + 1) ** -0.3, "grad_norm": 1.0, "learning_rate": 3e-4, "step": i + 1}
        for i in range(200)
    ]
    rep = analyze(write_trainer_state(tmp_path / "lm", entries))
    assert not [f for f in rep.findings if f.kind.startswith("rl-")]
    assert not [s for s in rep.skipped if s.kind.startswith("rl-")]
    assert rep.runs[0].judged and "train/loss" in rep.runs[0].judged_reason


def test_clip_saturation_with_several_iterations_per_batch(tmp_path):
    """TRL num_iterations=4: the first update of each batch is on-policy and logs exactly 0."""

    def multi(c):
        n = len(c["reward"])
        v = np.where(np.arange(n) % 4 == 0, 0.0, 0.3)
        c["clip_ratio/region_mean"], c["clip_ratio/high_mean"], c["clip_ratio/low_mean"] = (
            v,
            v / 2,
            v / 2,
        )

    (f,) = by_kind(analyze(grpo_run(tmp_path / "mu4", multi)), "rl-clip-saturation")
    assert f.evidence["median_clipfrac"] == pytest.approx(0.3)
