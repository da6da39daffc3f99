"""RL key names -> canonical rl/... names; a policy objective is never read as train/loss."""

from __future__ import annotations

import pytest

from stabdiag import table as T
from stabdiag.detectors import rl_common as rc
from stabdiag.sources import aliases
from stabdiag.sources.aliases import _RL_NAMES, is_rl_run, resolve

GRPO = [
    "loss",
    "grad_norm",
    "learning_rate",
    "num_tokens",
    "completions/mean_length",
    "completions/clipped_ratio",
    "completions/max_length",
    "rewards/acc_fn/mean",
    "rewards/acc_fn/std",
    "reward",
    "reward_std",
    "frac_reward_zero_std",
    "kl",
    "entropy",
    "clip_ratio/region_mean",
    "clip_ratio/high_mean",
    "epoch",
    "step",
]


def names(raw: list[str]) -> dict[str, str]:
    return {k: m.name for k, m in resolve(raw).items()}


def test_grpo_keys_map_to_rl_names_and_the_loss_is_a_policy_objective():
    got = names(GRPO)
    assert got["loss"] == rc.LOSS and T.TRAIN_LOSS not in got.values()
    assert got["kl"] == rc.KL and got["entropy"] == rc.ENTROPY and got["reward"] == rc.REWARD
    assert got["reward_std"] == rc.REWARD_STD and got["frac_reward_zero_std"] == rc.FRAC_ZERO_STD
    assert (
        got["completions/mean_length"] == rc.LENGTH
        and got["completions/clipped_ratio"] == rc.CLIPPED
    )
    assert (
        got["clip_ratio/region_mean"] == rc.CLIPFRAC and got["clip_ratio/high_mean"] == rc.CLIP_HIGH
    )
    assert got["rewards/acc_fn/std"] == "rl/rewards/acc_fn/std"
    assert (
        got["grad_norm"] == T.GRAD_NORM and got["learning_rate"] == T.LR
    )  # plain training metrics stay
    assert "policy objective" in resolve(GRPO)["loss"].why


@pytest.mark.parametrize(
    "raw",
    [
        ["loss", "kl", "grad_norm"],  # a VAE logs loss + kl: not RL
        ["loss", "entropy", "learning_rate"],
        ["train/loss", "train/grad_norm"],
    ],
)
def test_without_rl_keys_the_loss_stays_a_training_loss(raw):
    assert not is_rl_run(raw)
    assert names(raw)[raw[0]] == T.TRAIN_LOSS


def test_dpo_keys_and_eval_twins():
    got = names(
        [
            "loss",
            "rewards/chosen",
            "rewards/rejected",
            "rewards/accuracies",
            "rewards/margins",
            "logps/chosen",
            "eval_loss",
            "eval_rewards/accuracies",
            "eval_rewards/margins",
        ]
    )
    assert got["loss"] == rc.PREF_LOSS and got["eval_loss"] == rc.EVAL_PREF_LOSS
    assert (
        got["rewards/accuracies"] == rc.PREF_ACC
        and got["eval_rewards/accuracies"] == rc.EVAL_PREF_ACC
    )
    assert (
        got["rewards/margins"] == rc.PREF_MARGIN
        and got["eval_rewards/margins"] == "rl/eval/pref/margin"
    )
    assert T.VAL_LOSS not in got.values() and T.TRAIN_LOSS not in got.values()


def test_verl_console_jsonl_and_openrlhf_spellings():
    verl = names(
        [
            "actor/entropy",
            "actor/pg_loss",
            "actor/ppo_kl",
            "actor/kl_loss",
            "actor/pg_clipfrac",
            "actor/grad_norm",
            "critic/vf_explained_var",
            "critic/score/mean",
            "response_length/mean",
            "response_length/clip_ratio",
            "rollout_corr/kl",
            "rollout_corr/rollout_is_mean",
        ]
    )
    assert verl["actor/entropy"] == rc.ENTROPY and verl["actor/pg_loss"] == rc.LOSS
    assert (
        verl["actor/ppo_kl"] == rc.UPDATE_KL and verl["actor/kl_loss"] == rc.KL
    )  # update KL != reference KL
    assert (
        verl["critic/vf_explained_var"] == rc.EXPLAINED_VAR
        and verl["critic/score/mean"] == rc.SCORE
    )
    assert (
        verl["response_length/clip_ratio"] == rc.CLIPPED
        and verl["rollout_corr/kl"] == rc.ROLLOUT_KL
    )
    assert verl["actor/grad_norm"] == T.GRAD_NORM
    nested = names(
        ["data/actor/entropy", "data/critic/score/mean", "data/timing_s/gen"]
    )  # verl file logger
    assert (
        nested["data/actor/entropy"] == rc.ENTROPY
        and nested["data/timing_s/gen"] == "data/timing_s/gen"
    )
    orl = names(
        [
            "train/policy_loss",
            "train/kl",
            "train/reward",
            "train/response_length",
            "train/ppo_clip_ratio",
            "train/actor_grad_norm",
            "train/critic_loss",
            "train/logprobs_diff",
        ]
    )
    assert orl == {
        "train/policy_loss": rc.LOSS,
        "train/kl": rc.KL,
        "train/reward": rc.REWARD,
        "train/response_length": rc.LENGTH,
        "train/ppo_clip_ratio": rc.CLIPFRAC,
        "train/actor_grad_norm": T.GRAD_NORM,
        "train/critic_loss": rc.VALUE_LOSS,
        "train/logprobs_diff": rc.LOGP_DIFF,
    }


def test_trl_ppo_keys():
    got = names(
        [
            "objective/kl",
            "objective/entropy",
            "objective/rlhf_reward",
            "objective/scores",
            "policy/approxkl_avg",
            "policy/clipfrac_avg",
            "loss/value_avg",
            "loss/policy_avg",
            "val/ratio",
        ]
    )
    assert got == {
        "objective/kl": rc.KL,
        "objective/entropy": rc.ENTROPY,
        "objective/rlhf_reward": rc.REWARD,
        "objective/scores": rc.SCORE,
        "policy/approxkl_avg": rc.UPDATE_KL,
        "policy/clipfrac_avg": rc.CLIPFRAC,
        "loss/value_avg": rc.VALUE_LOSS,
        "loss/policy_avg": rc.LOSS,
        "val/ratio": "rl/policy_ratio",
    }


def test_every_name_the_detectors_read_is_one_the_alias_table_produces():
    produced = {c for c, _, _ in _RL_NAMES.values()} | {rc.LOSS, rc.PREF_LOSS}
    produced |= {"rl/eval/" + c[3:] for c in produced if c.startswith("rl/")}
    assert set(rc.NAMES) <= produced, set(rc.NAMES) - produced


def test_mapping_section_is_only_used_through_resolve():
    # the one hook: plain match() knows nothing of RL (so `stabdiag series` shows why from resolve)
    assert aliases.canonical("loss")[0] == T.TRAIN_LOSS
    assert aliases.rl_match("loss", preference=False).name == rc.LOSS
    assert aliases.rl_match("grad_norm") is None


def test_hf_tensorboard_mirror_of_a_grpo_run():
    """HF's TensorBoard/W&B callbacks prefix train/ and eval/: the same RL reading applies."""
    got = names(
        [
            "train/loss",
            "train/reward",
            "train/kl",
            "train/completions/mean_length",
            "train/grad_norm",
            "eval/reward",
        ]
    )
    assert got == {
        "train/loss": rc.LOSS,
        "train/reward": rc.REWARD,
        "train/kl": rc.KL,
        "train/completions/mean_length": rc.LENGTH,
        "train/grad_norm": T.GRAD_NORM,
        "eval/reward": "rl/eval/reward",
    }
