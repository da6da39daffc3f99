"""Every external metric spelling -> stabdiag's canonical names, in one table.

Spellings come from research/formats.md sections 1.5, 9 and 10 (HF Trainer, Lightning, Megatron,
DeepSpeed monitor, fairseq, torchtitan, OLMo-core, Composer, NeMo, llm.c, Keras). Matching is on
the whole lower-cased name, after stripping an x-axis suffix (`` vs samples``); a spelling listed
as a *core* also matches behind one split prefix (``train/``, ``eval_``, ``validation/`` ...), and
that prefix decides train vs val for losses. Only whole names match, so ``loss_scale`` can never be
read as a loss, and HF's end-of-run ``train/train_loss`` (a run average) is not a per-step loss.

When two raw names of one run land on the same canonical name, ``resolve`` keeps the best-ranked
one (e.g. Lightning ``train_loss_step`` over ``train_loss_epoch``); the others keep their own names.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from stabdiag import table as T

# Split prefixes: a core spelling behind one of these is a train or a val metric.
TRAIN_PREFIXES = (
    "train/",
    "train_",
    "training/",
    "train/samples/",
    "optim/",
    "metrics/train/",
    "loss_metrics/",
)
VAL_PREFIXES = (
    "eval/",
    "eval_",
    "val/",
    "val_",
    "valid/",
    "valid_",
    "validation/",
    "validation_",
    "validation_metrics/",
    "metrics/eval/",
)
_XAXIS_SUFFIX = re.compile(r" vs (samples|tokens|steps|iterations)$")

# Cores: (spelling, canonical, rank). For losses the canonical is decided by the split prefix.
# Lower rank wins when one run has several candidates for the same canonical metric.
_LOSS = "<loss>"
_CORES: tuple[tuple[str, str, int, str], ...] = (
    # spelling, canonical, rank, note
    ("loss", _LOSS, 1, ""),
    ("loss_step", _LOSS, 1, "Lightning on_step loss"),
    ("lm loss", _LOSS, 1, "Megatron"),
    ("lm-loss", _LOSS, 1, "Megatron-DeepSpeed"),
    ("lm_loss", _LOSS, 1, ""),
    ("ce loss", _LOSS, 1, "OLMo-core"),
    ("crossentropyloss", _LOSS, 2, "OLMo"),
    ("global_avg_loss", _LOSS, 1, "torchtitan"),
    ("avg_loss", _LOSS, 2, ""),
    ("nll_loss", _LOSS, 4, "fairseq, in bits"),
    ("loss_epoch", _LOSS, 5, "per-epoch average"),
    ("epoch_loss", _LOSS, 5, "Keras, per epoch"),
    ("grad_norm", T.GRAD_NORM, 1, ""),
    ("grad-norm", T.GRAD_NORM, 1, "Megatron"),
    ("grad norm", T.GRAD_NORM, 1, ""),
    ("gnorm", T.GRAD_NORM, 1, "fairseq"),
    ("total grad norm", T.GRAD_NORM, 1, "OLMo-core"),
    ("total_grad_norm", T.GRAD_NORM, 1, "OLMo"),
    ("grad_norm/total", T.GRAD_NORM, 1, ""),
    ("grad_2.0_norm_total", T.GRAD_NORM, 1, "Lightning track_grad_norm / grad_norm()"),
    ("grad_2.0_norm/total", T.GRAD_NORM, 1, "Lightning"),
    ("total_norm", T.GRAD_NORM, 2, ""),
    ("global_grad_norm", T.GRAD_NORM, 1, ""),
    ("learning_rate", T.LR, 1, ""),
    ("lr", T.LR, 1, ""),
    ("learning-rate", T.LR, 1, "Megatron"),
    ("learning rate", T.LR, 1, ""),
    ("loss_scale", T.LOSS_SCALE, 1, ""),
    ("loss-scale", T.LOSS_SCALE, 1, "Megatron"),
    ("loss scale", T.LOSS_SCALE, 1, "Megatron stdout"),
    ("lossscale", T.LOSS_SCALE, 1, ""),
    ("grad_scale", T.LOSS_SCALE, 2, "torch GradScaler"),
    ("fp16 grad scale", T.LOSS_SCALE, 2, ""),
    ("skipped_step", T.SKIPPED_STEP, 1, ""),
    ("step skipped", T.SKIPPED_STEP, 1, "OLMo-core"),
    ("skipped", T.SKIPPED_STEP, 2, "DeepSpeed: cumulative count"),
    ("number of skipped iterations", T.SKIPPED_STEP, 2, "Megatron: count per log interval"),
    ("max_attention_logit", T.MAX_ATTN_LOGIT, 1, "Megatron"),
    ("max_attn_logit", T.MAX_ATTN_LOGIT, 1, ""),
    ("output_logz", T.OUTPUT_LOGZ, 1, ""),
    ("update_ratio", T.UPDATE_RATIO, 1, ""),
    ("update_to_param_ratio", T.UPDATE_RATIO, 1, ""),
    ("param_norm", T.PARAM_NORM, 1, ""),
    ("params-norm", T.PARAM_NORM, 1, "Megatron"),
    ("params_norm", T.PARAM_NORM, 1, ""),
    ("params norm", T.PARAM_NORM, 1, "Megatron stdout"),
    ("tokens_per_s", T.TOKENS_PER_S, 1, ""),
    ("tokens_per_second", T.TOKENS_PER_S, 1, ""),
    ("tokens_per_sec", T.TOKENS_PER_S, 1, "Composer"),
    ("tokens_per_second_per_gpu", T.TOKENS_PER_S, 2, "torchtune, per GPU"),
    ("throughput(tps)", T.TOKENS_PER_S, 1, "torchtitan"),
    ("throughput/tokens_per_sec", T.TOKENS_PER_S, 1, "Composer"),
    ("throughput/device/tps", T.TOKENS_PER_S, 2, "OLMo-core, per device"),
    ("tps", T.TOKENS_PER_S, 2, ""),
    ("tok/s", T.TOKENS_PER_S, 2, "llm.c / modded-nanogpt"),
)

# Whole names that match only as written (no prefix handling).
_EXACT: tuple[tuple[str, str, int, str], ...] = (
    ("train_loss", T.TRAIN_LOSS, 1, ""),
    ("train_loss_step", T.TRAIN_LOSS, 1, "Lightning on_step loss"),
    ("train_loss_epoch", T.TRAIN_LOSS, 5, "Lightning on_epoch loss"),
    ("reduced_train_loss", T.TRAIN_LOSS, 1, "NeMo"),
    ("loss/train/total", T.TRAIN_LOSS, 1, "Composer"),
    ("train/samples/train_loss", T.TRAIN_LOSS, 1, "DeepSpeed monitor (x-axis = samples)"),
    ("train_loss_local", T.TRAIN_LOSS, 2, ""),
    ("trl", T.TRAIN_LOSS, 1, "llm.c"),
    ("norm", T.GRAD_NORM, 3, "llm.c"),
    ("l2_norm/grad/global", T.GRAD_NORM, 1, "Composer OptimizerMonitor"),
    ("eval_loss", T.VAL_LOSS, 1, "HF Trainer"),
    ("val_loss", T.VAL_LOSS, 1, ""),
    ("valid_loss", T.VAL_LOSS, 1, ""),
    ("validation loss", T.VAL_LOSS, 1, ""),
    ("lm loss validation", T.VAL_LOSS, 1, "Megatron"),
    ("lm-loss validation", T.VAL_LOSS, 1, "Megatron-DeepSpeed"),
    ("lm loss value", T.VAL_LOSS, 1, "Megatron validation line"),
    ("val loss", T.VAL_LOSS, 1, "nanoGPT"),
    ("validate loss", T.VAL_LOSS, 1, "torchtitan"),
    ("tel", T.VAL_LOSS, 1, "llm.c"),
    ("epoch_val_loss", T.VAL_LOSS, 5, "per epoch"),
    ("val_loss_epoch", T.VAL_LOSS, 2, "Lightning on_epoch"),
    ("train/samples/eval_loss", T.VAL_LOSS, 1, "DeepSpeed monitor"),
    ("scale", T.LOSS_SCALE, 3, "fairseq amp"),
)

# Whole names that look like an alias but are not the per-step metric.
_NOT: dict[str, str] = {
    "train/train_loss": "HF Trainer end-of-run average, not a per-step loss",
    "grad_norm_square": "squared grad norm, kept as is",
    "train/grad_norm_square": "squared grad norm, kept as is",
}

# Patterns: (regex on the lower-cased name, canonical or a function of the match, note).
_LR_GROUP = re.compile(r"^(?:optim/)?(?:lr|learning_rate)[ _]?\(?group ?(\d+)\)?$")
_LR_OPT = re.compile(r"^lr-[^/]+(?:/(?:pg|group)(\d+))?$")
_GRAD_LAYER = re.compile(r"^(?:train/)?(?:grad_2\.0_norm[/_]|grad_norm/)(.+)$")
_GRAD_LAYER_SUFFIX = re.compile(r"^(?:train/)?(?!eval/|val/|validation/)(.+?)[./]grad_norm$")
_ACT_RMS = re.compile(r"^(?:train/)?act_rms/(.+)$")


@dataclass(frozen=True)
class Context:
    """Where a name was found: the format, and the split its directory or record implies."""

    format: str = ""
    split: str = ""  # "", "train" or "val": e.g. Keras validation/ dir or an HF eval entry


@dataclass(frozen=True)
class Match:
    """The canonical name a raw series was taken as, why (shown by ``stabdiag series``), and how
    strong a candidate it is when several series could be the same metric."""

    name: str
    why: str
    rank: int  # 0 = already canonical; larger = weaker candidate; -1 = user override


def _table() -> dict[str, tuple[str, int, str]]:
    out: dict[str, tuple[str, int, str]] = {}
    for spelling, canon, rank, note in _CORES:
        tail = f" ({note})" if note else ""
        for split, prefixes in (("", ("",)), ("train", TRAIN_PREFIXES), ("val", VAL_PREFIXES)):
            for p in prefixes:
                key = p + spelling
                if canon == _LOSS:
                    c = T.VAL_LOSS if split == "val" else T.TRAIN_LOSS
                else:
                    if split == "val":
                        continue  # eval/grad_norm etc. are not training metrics
                    c = canon
                out.setdefault(key, (c, rank, f"alias '{key}'{tail}"))
    for spelling, canon, rank, note in _EXACT:
        out[spelling] = (canon, rank, f"alias '{spelling}'" + (f" ({note})" if note else ""))
    return out


ALIASES: Mapping[str, tuple[str, int, str]] = _table()


def canonical(raw: str, context: Context | None = None) -> tuple[str, str]:
    """Map one raw series name to (metric name, why). Unknown names are kept as they are."""
    m = match(raw, context)
    return m.name, m.why


def match(raw: str, context: Context | None = None) -> Match:
    ctx = context or Context()
    if T.is_canonical(raw):
        return Match(raw, "canonical name", 0)
    low = raw.strip().lower()
    if low in _NOT:
        return Match(raw, _NOT[low], 99)
    m = _lookup(low, ctx)
    if m is not None:
        return m
    stripped = _XAXIS_SUFFIX.sub("", low)
    if stripped != low:
        m = _lookup(stripped, ctx)
        if m is not None:
            return Match(
                m.name, f"{m.why}; x-axis suffix '{low[len(stripped) :].strip()}'", m.rank + 10
            )
    return Match(raw, "unknown name, kept as is", 99)


def _lookup(low: str, ctx: Context) -> Match | None:
    hit = ALIASES.get(low)
    if hit is not None:
        name, rank, why = hit
        if ctx.split == "val" and name == T.TRAIN_LOSS and low in _BARE_LOSS:
            return Match(T.VAL_LOSS, f"{why} in a validation split", rank)
        return Match(name, why, rank)
    g = _LR_GROUP.match(low) or _LR_OPT.match(low)
    if g:
        group = int(g.group(1) or 0)
        return Match(T.LR, f"learning rate of param group {group} ('{low}')", 1 + group)
    g = _ACT_RMS.match(low)
    if g:
        return Match(T.ACT_RMS_PREFIX + g.group(1), "per-layer activation RMS", 1)
    g = _GRAD_LAYER.match(low) or _GRAD_LAYER_SUFFIX.match(low)
    if g:
        return Match(T.GRAD_NORM_PREFIX + g.group(1), "per-group/layer grad norm", 1)
    return None


_BARE_LOSS = frozenset(s for s, c, _, _ in _CORES if c == _LOSS)


def resolve(
    raw_names: Iterable[str],
    context: Context | None = None,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, Match]:
    """Map all raw names of one run; at most one raw name per canonical metric.

    ``overrides`` maps canonical -> raw (``--map train/loss=my_tag``) and beats the table.
    """
    names = list(dict.fromkeys(raw_names))
    forced = {raw: canon for canon, raw in (overrides or {}).items()}
    rl, pref = is_rl_run(names), is_preference_run(names)  # RL section below
    out: dict[str, Match] = {}
    for raw in names:
        if raw in forced:
            out[raw] = Match(forced[raw], f"--map {forced[raw]}={raw}", -1)
        else:
            out[raw] = (rl and rl_match(raw, pref)) or match(raw, context)
    best: dict[str, str] = {}
    for raw, m in out.items():
        if m.name == raw and m.rank == 99:
            continue
        cur = best.get(m.name)
        if cur is None or m.rank < out[cur].rank:
            best[m.name] = raw
    for raw, m in list(out.items()):
        if m.rank != 99 and best.get(m.name) != raw:
            winner = best[m.name]
            # A raw name spelled like the canonical one must not collide with the winner.
            own = f"raw:{raw}" if raw == m.name else raw
            out[raw] = Match(own, f"also matches {m.name}, but '{winner}' was taken as it", 99)
    return out


def resolve_shared(
    raw_names: Iterable[str],
    context: Context | None = None,
    overrides: Mapping[str, str] | None = None,
) -> Mapping[str, Match]:
    """``resolve``, remembered: a tree of many runs logs the same few sets of names, and mapping
    them again for each run was a tenth of loading 100,000 small files (issue 13 R4). The answer
    is read-only (one mapping is shared by every run with those names); ``resolve`` is pure."""
    key = None if overrides is None else tuple(overrides.items())
    try:
        return _resolve_frozen(tuple(raw_names), context, key)
    except TypeError:  # an unhashable override value: nothing to remember it by
        return resolve(raw_names, context, overrides)


@functools.lru_cache(maxsize=4096)
def _resolve_frozen(
    names: tuple[str, ...], context: Context | None, overrides: tuple[tuple[str, str], ...] | None
) -> Mapping[str, Match]:
    return MappingProxyType(resolve(names, context, None if overrides is None else dict(overrides)))


# ============================================================================ RL fine-tuning
# Owned by the RL work (issue 20). Spellings of TRL (GRPO/RLOO/PPO/DPO), verl (console and file
# logger, whose JSONL nests every key under "data") and OpenRLHF (``train/`` keys in W&B or
# TensorBoard) -> canonical ``rl/...`` names. They apply only to a run that carries RL keys
# (``is_rl_run``): there a bare ``loss`` is a policy-gradient objective that moves around zero by
# design (or a DPO loss), not a language-model loss, so it becomes ``rl/loss`` (``rl/pref/loss``)
# and the pre-training rules on ``train/loss`` stay silent. Eval twins (``eval_kl``, ``eval/...``)
# become ``rl/eval/...``. Hook: one branch in ``resolve`` above.

_RL_PREFIXES = (
    "completions/",
    "rewards/",
    "clip_ratio/",
    "sampling/",
    "objective/",
    "policy/",
    "logps/",
    "actor/",
    "critic/",
    "response_length/",
    "rollout_corr/",
)
_RL_MARKERS = frozenset(
    {
        "reward",
        "reward_std",
        "frac_reward_zero_std",
        "completion_length",
        "policy_loss",
        "ppo_clip_ratio",
        "logprobs_diff",
        "response_length",
        "critic_loss",
        "actor_grad_norm",
        "policy_entropy",
    }
)
_PREF_MARKERS = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
)
# Wrappers stripped before matching: OpenRLHF's W&B/TensorBoard ``train/``, verl JSONL's ``data/``.
_RL_WRAPPERS = ("data/", "train/")
_RL_EVAL = ("eval_", "eval/")

# spelling -> (canonical, rank, note). Lower rank wins when two spellings meet in one run.
_RL_NAMES: Mapping[str, tuple[str, int, str]] = {
    # the objective
    "policy_loss": ("rl/loss", 1, "OpenRLHF"),
    "actor/pg_loss": ("rl/loss", 1, "verl"),
    "loss/policy_avg": ("rl/loss", 1, "TRL PPO"),
    # KL to the reference policy (what beta / kl_loss_coef penalise)
    "kl": ("rl/kl", 1, "TRL GRPO/RLOO, OpenRLHF: KL to the reference"),
    "objective/kl": ("rl/kl", 1, "TRL PPO: KL to the reference"),
    "actor/kl_loss": ("rl/kl", 1, "verl use_kl_loss: KL to the reference"),
    "critic/kl": ("rl/kl", 2, "verl in-reward KL penalty"),
    "policy_kl": ("rl/kl", 2, "OpenRLHF use_kl_loss"),
    # KL between the policy before and after an update (PPO's approx-KL)
    "actor/ppo_kl": ("rl/update_kl", 1, "verl: old vs new policy"),
    "policy/approxkl_avg": ("rl/update_kl", 1, "TRL PPO: old vs new policy"),
    "ppo_kl": ("rl/update_kl", 1, "OpenRLHF"),
    # entropy of the policy
    "entropy": ("rl/entropy", 1, "TRL GRPO/RLOO"),
    "objective/entropy": ("rl/entropy", 1, "TRL PPO"),
    "policy/entropy_avg": ("rl/entropy", 2, "TRL PPO"),
    "actor/entropy": ("rl/entropy", 1, "verl"),
    "policy_entropy": ("rl/entropy", 1, "OpenRLHF"),
    "entropy_loss": ("rl/entropy", 2, "OpenRLHF entropy term"),
    # reward
    "reward": ("rl/reward", 1, "TRL GRPO/RLOO, OpenRLHF: mean reward"),
    "objective/rlhf_reward": ("rl/reward", 1, "TRL PPO: score minus KL penalty"),
    "critic/score/mean": ("rl/score", 1, "verl: reward before the KL penalty"),
    "objective/scores": ("rl/score", 1, "TRL PPO: reward-model score"),
    "critic/rewards/mean": ("rl/reward", 1, "verl: reward after the KL penalty"),
    "reward_std": ("rl/reward_std", 1, "TRL: std of rewards"),
    "frac_reward_zero_std": (
        "rl/frac_reward_zero_std",
        1,
        "TRL: share of groups with equal rewards",
    ),
    "critic/score/max": ("rl/score_max", 1, "verl"),
    "critic/score/min": ("rl/score_min", 1, "verl"),
    # completion length
    "completions/mean_length": ("rl/length/mean", 1, "TRL"),
    "completion_length": ("rl/length/mean", 2, "TRL (older)"),
    "completions/min_length": ("rl/length/min", 1, "TRL"),
    "completions/max_length": ("rl/length/max", 1, "TRL"),
    "completions/clipped_ratio": (
        "rl/length/clipped_ratio",
        1,
        "TRL: share cut at max_completion_length",
    ),
    "completions/mean_terminated_length": ("rl/length/terminated_mean", 1, "TRL"),
    "completions/min_terminated_length": ("rl/length/terminated_min", 1, "TRL"),
    "completions/max_terminated_length": ("rl/length/terminated_max", 1, "TRL"),
    "response_length/mean": ("rl/length/mean", 1, "verl"),
    "response_length/max": ("rl/length/max", 1, "verl"),
    "response_length/min": ("rl/length/min", 1, "verl"),
    "response_length/clip_ratio": (
        "rl/length/clipped_ratio",
        1,
        "verl: share cut at max_response_length",
    ),
    "response_length": ("rl/length/mean", 1, "OpenRLHF"),
    # clipping of the policy ratio
    "clip_ratio/region_mean": ("rl/clipfrac", 1, "TRL: share of tokens clipped"),
    "clip_ratio": ("rl/clipfrac", 2, "TRL (older)"),
    "clip_ratio/low_mean": ("rl/clipfrac/low_mean", 1, "TRL"),
    "clip_ratio/low_min": ("rl/clipfrac/low_min", 1, "TRL"),
    "clip_ratio/high_mean": ("rl/clipfrac/high_mean", 1, "TRL"),
    "clip_ratio/high_max": ("rl/clipfrac/high_max", 1, "TRL"),
    "policy/clipfrac_avg": ("rl/clipfrac", 1, "TRL PPO"),
    "actor/pg_clipfrac": ("rl/clipfrac", 1, "verl"),
    "actor/pg_clipfrac_lower": ("rl/clipfrac/low_mean", 1, "verl dual-clip"),
    "ppo_clip_ratio": ("rl/clipfrac", 1, "OpenRLHF"),
    "val/ratio": ("rl/policy_ratio", 1, "TRL PPO: mean new/old policy ratio"),
    # trainer vs inference engine
    "sampling/sampling_logp_difference/mean": (
        "rl/logp_diff/mean",
        1,
        "TRL vLLM: |trainer - sampler| log-prob",
    ),
    "sampling/sampling_logp_difference/max": ("rl/logp_diff/max", 1, "TRL vLLM"),
    "sampling/importance_sampling_ratio/mean": ("rl/is_ratio/mean", 1, "TRL vLLM"),
    "sampling/importance_sampling_ratio/min": ("rl/is_ratio/min", 1, "TRL vLLM"),
    "sampling/importance_sampling_ratio/max": ("rl/is_ratio/max", 1, "TRL vLLM"),
    "rollout_corr/log_ppl_abs_diff": ("rl/logp_diff/mean", 1, "verl rollout correction"),
    "rollout_corr/kl": ("rl/rollout_kl", 1, "verl: rollout vs trainer policy KL"),
    "rollout_corr/rollout_is_mean": ("rl/is_ratio/mean", 1, "verl"),
    "rollout_corr/rollout_is_min": ("rl/is_ratio/min", 1, "verl"),
    "rollout_corr/rollout_is_max": ("rl/is_ratio/max", 1, "verl"),
    "training/rollout_probs_diff_mean": (
        "rl/prob_diff/mean",
        1,
        "verl (older): |p_trainer - p_rollout|",
    ),
    "training/rollout_probs_diff_max": ("rl/prob_diff/max", 1, "verl (older)"),
    "logprobs_diff": ("rl/logp_diff/mean", 1, "OpenRLHF"),
    # the critic (PPO)
    "critic/vf_explained_var": ("rl/value/explained_var", 1, "verl"),
    "critic/vf_loss": ("rl/value/loss", 1, "verl"),
    "loss/value_avg": ("rl/value/loss", 1, "TRL PPO"),
    "critic_loss": ("rl/value/loss", 1, "OpenRLHF"),
    "critic/grad_norm": ("rl/value/grad_norm", 1, "verl"),
    # plain training metrics under RL spellings
    "actor/grad_norm": (T.GRAD_NORM, 1, "verl policy grad norm"),
    "actor_grad_norm": (T.GRAD_NORM, 1, "OpenRLHF"),
    "actor/lr": (T.LR, 1, "verl"),
    "actor_lr": (T.LR, 1, "OpenRLHF"),
    "policy_lr": (T.LR, 1, "OpenRLHF"),
    # DPO
    "rewards/chosen": ("rl/pref/reward_chosen", 1, "TRL DPO"),
    "rewards/rejected": ("rl/pref/reward_rejected", 1, "TRL DPO"),
    "rewards/accuracies": ("rl/pref/accuracy", 1, "TRL DPO: share of pairs ranked right"),
    "rewards/margins": ("rl/pref/margin", 1, "TRL DPO: chosen - rejected reward"),
    "logps/chosen": ("rl/pref/logp_chosen", 1, "TRL DPO"),
    "logps/rejected": ("rl/pref/logp_rejected", 1, "TRL DPO"),
}
_RL_REWARD_FN = re.compile(r"^rewards/(.+)/(mean|std)$")


def _rl_key(low: str) -> tuple[str, bool]:
    """(key without wrappers and eval prefix, whether it was an eval twin)."""
    for w in _RL_WRAPPERS:
        if low.startswith(w) and len(low) > len(w):
            low = low[len(w) :]
            break
    for e in _RL_EVAL:
        if low.startswith(e) and len(low) > len(e):
            return low[len(e) :], True
    return low, False


def is_rl_run(raw_names: Iterable[str]) -> bool:
    """True when the names carry keys only RL trainers log (reward, completions/*, actor/* ...)."""
    for raw in raw_names:
        key, _ = _rl_key(raw.strip().lower())
        if key in _RL_MARKERS or key.startswith(_RL_PREFIXES):
            return True
    return False


def is_preference_run(raw_names: Iterable[str]) -> bool:
    return any(_rl_key(r.strip().lower())[0] in _PREF_MARKERS for r in raw_names)


def rl_match(raw: str, preference: bool = False) -> Match | None:
    """The ``rl/...`` (or plain training) name of one raw name of an RL run, or None."""
    key, is_eval = _rl_key(raw.strip().lower())
    hit = _RL_NAMES.get(key)
    if hit is not None:
        name, rank, note = hit
        why = f"RL alias '{key}' ({note})"
    elif key == "loss":
        name, rank = ("rl/pref/loss" if preference else "rl/loss"), 1
        why = (
            "DPO loss of a preference run"
            if preference
            else "policy objective of an RL run (moves around 0 by design; not a language-model loss)"
        )
    elif (g := _RL_REWARD_FN.match(key)) is not None:
        name, rank, why = f"rl/rewards/{g[1]}/{g[2]}", 1, f"RL reward function '{g[1]}' ({g[2]})"
    else:
        return None
    if is_eval:
        if not name.startswith("rl/"):
            return None  # eval twins of plain training metrics keep the base table's verdict
        name, why = "rl/eval/" + name[3:], why + ", eval twin"
    return Match(name, why, rank)
