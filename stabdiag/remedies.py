"""Remedies as data: what to change, in priority order, with values taken from the run.

Each finding kind maps to an ordered list of ``Rule``s. A rule knows its title, why it helps,
where the advice comes from, and how to turn the finding's evidence and the run's series into
concrete actions ("clip the global grad norm at 6.2", "lower the peak LR to 1.5e-4"). ``suggest``
ranks the rules across all findings of a run and merges duplicates, keeping track of which
findings each remedy addresses.

Sources of the numbers (see docs/research/detection.md, section c):
- warm-up of at least 5% of the steps, AdamW beta2 0.95, clip 1.0, QK-layernorm and z-loss 1e-4:
  Wortsman et al. 2023, "Small-scale proxies for large-scale Transformer training instabilities".
- rewind about 100 steps before the spike and skip 200-500 batches: Chowdhery et al. 2022 (PaLM).
- lower the LR 2x: llm-foundry KillLossSpike's message; 10x for NaN at start: TensorBoard Debugger V2
  tutorial and common practice.
- QK-clip tau=100, alpha=0.5: Megatron-LM ``transformer_config.py``.
- bf16 instead of fp16 and fp32 softmax: DeepSpeed #931, Megatron ``--attention-softmax-in-fp32``.
- adaptive clipping z 2.5 / alpha 0.97: ZClip (Kumar et al. 2025).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stabdiag.findings import Finding, Severity
from stabdiag.table import GRAD_NORM, LR, TRAIN_LOSS, RunData

WORTSMAN = "Wortsman et al. 2023, arXiv:2309.14322"
PALM = "Chowdhery et al. 2022 (PaLM), arXiv:2204.02311, section 5.1"
ZCLIP = "Kumar et al. 2025 (ZClip), arXiv:2504.02507"
LLM_FOUNDRY = "mosaicml/llm-foundry KillLossSpike callback"
MEGATRON_QKCLIP = "NVIDIA/Megatron-LM transformer_config.py (qk_clip_threshold=100, qk_clip_alpha=0.5)"
DEEPSPEED_FP16 = "deepspeedai/DeepSpeed #931, #697 (benign scale search vs overflow)"
MEGATRON_FP32_SOFTMAX = "NVIDIA/Megatron-LM --attention-softmax-in-fp32"
OLMO2 = "OLMo 2 (Team OLMo 2025), arXiv:2501.00656"
TB_DEBUGGER = "TensorBoard Debugger V2 tutorial (tensorflow/tensorboard docs/debugger_v2.md)"
MEGATRON_RERUN = "NVIDIA/Megatron-LM rerun_state_machine.py (rerun on another GPU)"
HF_NAN_FILTER = "huggingface/trl #6702 (logging_nan_inf_filter hides NaN)"


@dataclass(frozen=True, kw_only=True)
class Remedy:
    """One ranked piece of advice for one run; ``addresses`` lists the findings it answers."""

    id: str
    kind: str
    run: str
    rank: int
    title: str
    actions: tuple[str, ...]
    why: str
    references: tuple[str, ...]
    addresses: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "run": self.run, "rank": self.rank, "title": self.title,
            "actions": list(self.actions), "why": self.why, "references": list(self.references),
            "addresses": list(self.addresses),
        }


Actions = Callable[[Finding, RunData], list[str]]


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    why: str
    references: tuple[str, ...]
    actions: Actions


# --- values derived from the run -------------------------------------------------------------


def fmt(x: float) -> str:
    """Short human number: 3 significant digits, scientific for very small or large values."""
    if x == 0 or not np.isfinite(x):
        return str(x)
    return f"{x:.2e}" if abs(x) < 1e-2 or abs(x) >= 1e5 else f"{x:.3g}"


def lr_at(run: RunData, step: int | None) -> float | None:
    """The LR in force at ``step`` (last logged value at or before it)."""
    s = run.get(LR)
    if s is None or step is None:
        return None
    i = int(np.searchsorted(s.steps, step, side="right")) - 1
    v = s.values[max(i, 0)]
    return float(v) if np.isfinite(v) and v > 0 else None


def peak_lr(run: RunData) -> float | None:
    s = run.get(LR)
    if s is None:
        return None
    v = s.values[np.isfinite(s.values)]
    return float(v.max()) if len(v) and v.max() > 0 else None


def last_step(run: RunData) -> int:
    s = run.get(TRAIN_LOSS)
    ends = [int(x.steps[-1]) for x in run.series.values() if len(x)]
    return int(s.steps[-1]) if s is not None else max(ends, default=0)


def healthy_clip(f: Finding, run: RunData) -> float | None:
    """Clip threshold from the healthy grad-norm distribution: the p99 of non-spike grad norms.

    Clipping at the upper edge of normal leaves ordinary steps untouched and caps outliers.
    """
    ev = f.evidence
    for key in ("healthy_p99", "grad_norm_p99", "p99"):
        if isinstance(ev.get(key), int | float) and ev[key] > 0:
            return float(ev[key])
    s = run.get(GRAD_NORM)
    if s is None:
        return None
    v = s.values[np.isfinite(s.values) & (s.values > 0)]
    if len(v) < 10:
        return None
    med = np.median(v)
    mad = np.median(np.abs(v - med)) * 1.4826
    core = v[v <= med + 6 * max(mad, 1e-12)]
    return float(np.percentile(core, 99)) if len(core) else None


def _lr_actions(factor: float, fallback: str) -> Actions:
    def actions(f: Finding, run: RunData) -> list[str]:
        at = f.evidence.get("lr_at_onset") or lr_at(run, f.step_start) or peak_lr(run)
        if not at:
            return [fallback]
        return [f"lower the peak LR to {fmt(at * factor)} ({factor:g}x the {fmt(at)} in force "
                f"at step {f.step_start})"]
    return actions


def _warmup_actions(f: Finding, run: RunData) -> list[str]:
    n = max(int(round(0.05 * last_step(run))), 1)
    return [f"warm the LR up linearly over at least {n} steps (5% of the {last_step(run)} steps logged)"]


def _clip_actions(f: Finding, run: RunData) -> list[str]:
    c = healthy_clip(f, run)
    if c is None:
        return ["clip the global grad norm at 1.0 (the Megatron, HF and OLMo default)"]
    return [f"clip the global grad norm at {fmt(c)} (p99 of this run's healthy grad norms), "
            "or at 1.0 if you have no clipping yet"]


def _rewind_actions(f: Finding, run: RunData) -> list[str]:
    start = f.step_start or 0
    return [f"restart from a checkpoint at or before step {max(start - 100, 0)} (~100 steps before onset)",
            "skip the 200-500 batches that follow that checkpoint, then continue"]


def _const(*lines: str) -> Actions:
    return lambda f, run: list(lines)


def _rank_actions(f: Finding, run: RunData) -> list[str]:
    rank = f.evidence.get("rank")
    who = f"rank {rank}" if rank is not None else "the departing rank"
    return [f"rerun the steps from {f.step_start} on other hardware and compare; drain the node of {who} "
            "if the result does not reproduce there",
            "check that every replica loads the same checkpoint and data order (a desynchronised replica)"]


# --- the table ---------------------------------------------------------------------------------

R_LOWER_LR_2 = Rule("lower-lr", "Lower the learning rate",
                    "Spikes and explosions at a given LR usually vanish at a smaller one.",
                    (LLM_FOUNDRY, WORTSMAN), _lr_actions(0.5, "halve the peak LR"))
R_LOWER_LR_10 = Rule("lower-lr-10x", "Lower the learning rate 10x",
                     "A run that goes non-finite or diverges is far past its stable LR.",
                     (TB_DEBUGGER, WORTSMAN), _lr_actions(0.1, "lower the peak LR 10x"))
R_CLIP = Rule("clip", "Clip the global gradient norm",
              "A clip at the top of the healthy distribution stops one bad batch from moving the weights far.",
              (WORTSMAN, ZCLIP), _clip_actions)
R_ADAPTIVE_CLIP = Rule("adaptive-clip", "Use adaptive gradient clipping",
                       "Clipping against an EMA of recent grad norms follows the run as its scale changes.",
                       (ZCLIP,), _const("ZClip with z_thresh 2.5 and alpha 0.97, or skip steps whose loss "
                                        "or grad norm is 6 sigma above the last 128 (OLMo-core)"))
R_BETA2 = Rule("beta2", "Lower AdamW beta2",
               "A shorter second-moment memory reacts before a rare large gradient turns into a huge update.",
               (WORTSMAN, OLMO2), _const("set AdamW beta2 to 0.95 if it is higher (the PyTorch and HF "
                                         "default is 0.999)"))
R_SKIP_UPDATE = Rule("skip-spike-updates", "Record it; let the optimizer skip such updates",
                     "A spike that recovers within a few steps costs little; skipping the update that "
                     "caused it costs less.", (OLMO2, "allenai/OLMo-core SkipStepAdamW"),
                     lambda f, run: [
                         f"no rewind needed: the loss recovered in {f.evidence.get('recovery_steps', 'a few')} "
                         "step(s); watch whether spikes recur",
                         "to absorb them automatically, skip updates whose loss or grad norm is 6 sigma "
                         "above the last 128 steps (OLMo-core SkipStepAdamW)"])
R_WARMUP = Rule("warmup", "Warm the learning rate up",
                "Early updates at full LR hit the un-adapted Adam state; a warm-up avoids early divergence.",
                (WORTSMAN,), _warmup_actions)
R_REWIND = Rule("rewind", "Rewind and skip the batches",
                "A spike that does not recover is a data x optimizer-state interaction; replaying from before "
                "it with other data usually passes.", (PALM,), _rewind_actions)
R_BF16 = Rule("bf16", "Switch from fp16 to bf16",
              "bf16 has fp32's exponent range, so activations and gradients no longer overflow.",
              (DEEPSPEED_FP16,), _const("train in bf16 autocast (drop the loss scaler)",
                                        "if bf16 is unavailable: compute attention softmax and the loss in fp32"))
R_FP32_SOFTMAX = Rule("fp32-softmax", "Compute softmax and loss in fp32",
                      "The attention softmax and the log of the loss are where fp16 overflows first.",
                      (MEGATRON_FP32_SOFTMAX,), _const("keep attention softmax, norms and the loss in fp32"))
R_DATA = Rule("check-data", "Check the data at the first bad step",
              "NaN at the start is often an empty or fully masked batch (0/0), or log(0) in a custom loss.",
              (TB_DEBUGGER,), lambda f, run: [
                  f"inspect the batch(es) at step {f.step_start}: empty sequences, all-masked labels, "
                  "out-of-range token ids", "use the library's fused cross-entropy instead of log(softmax)"])
R_NAN_FILTER = Rule("nan-visible", "Make NaN steps visible",
                    "Logging filters can hide NaN losses; count them instead.",
                    (HF_NAN_FILTER,), _const("set logging_nan_inf_filter=False (HF Trainer) and log the "
                                             "fraction of non-finite steps"))
R_QK_NORM = Rule("qk-norm", "Add QK-norm",
                 "Normalising queries and keys bounds the attention logits, which otherwise grow without limit.",
                 (WORTSMAN, MEGATRON_QKCLIP),
                 _const("add LayerNorm/RMSNorm on q and k before the dot product",
                        "or QK-clip: rescale Q/K weights when the max logit exceeds tau=100 (alpha=0.5)"))
R_Z_LOSS = Rule("z-loss", "Add z-loss",
                "z-loss pulls log Z of the output softmax towards 0 so output logits cannot drift.",
                (WORTSMAN, OLMO2), _const("add z-loss 1e-4 * logsumexp(logits)^2 (OLMo 2 uses 1e-5)",
                                          "use decoupled weight decay 0.1 on the output layer"))
R_STALL = Rule("unstall", "Find out why learning stopped",
               "A loss stuck far above its trend with shrinking gradients means updates no longer move the model.",
               (WORTSMAN,), lambda f, run: [
                   "check the LR schedule (decayed to ~0 too early?) and that the optimizer steps are not skipped",
                   "check labels and data order (a constant or shuffled-away target gives a chance-level loss)",
                   *_lr_actions(0.5, "if it stalled after a spike, lower the LR 2x and resume from before it")(f, run)])
R_SCALE_INFO = Rule("scaler-ok", "Nothing to do: the loss scaler is searching",
                    "Skipped steps while the dynamic loss scale settles are the scaler working as designed.",
                    (DEEPSPEED_FP16,), _const("no action; watch that the skips stop once the scale settles"))
R_RESTART = Rule("restart-check", "Confirm the resume restored all state",
                 "A resume that restores weights but not optimizer, scheduler or data position repeats or "
                 "skips data and can spike.", (PALM,),
                 lambda f, run: [f"check that optimizer, LR scheduler, loss scaler and data-loader position were "
                                 f"restored at step {f.step_start}; stabdiag keeps the values written last"])
R_RANK = Rule("rank-hardware", "Isolate the faulty rank",
              "One replica departing from the others points to hardware or a desynchronised replica, not the model.",
              (MEGATRON_RERUN,), _rank_actions)
R_WARN_LR_JUMP = Rule("lr-jump", "Smooth the LR schedule",
                      "A sudden LR increase hits the Adam state sized for the old LR.",
                      (WORTSMAN,), lambda f, run: [
                          f"check the scheduler around step {f.step_start} (resume with a fresh scheduler, "
                          "wrong warm-up restart)", *_warmup_actions(f, run)])

RULES: Mapping[str, tuple[Rule, ...]] = {
    "loss-spike": (R_REWIND, R_CLIP, R_LOWER_LR_2, R_BETA2, R_ADAPTIVE_CLIP),
    "grad-spike": (R_CLIP, R_ADAPTIVE_CLIP, R_BETA2, R_LOWER_LR_2),
    "grad-explosion": (R_CLIP, R_LOWER_LR_2, R_WARMUP, R_BETA2),
    "nonfinite": (R_DATA, R_FP32_SOFTMAX, R_LOWER_LR_10, R_CLIP, R_BF16, R_NAN_FILTER),
    "fp16-overflow": (R_BF16, R_FP32_SOFTMAX, R_LOWER_LR_2, R_CLIP),
    "divergence": (R_REWIND, R_LOWER_LR_2, R_WARMUP, R_CLIP, R_Z_LOSS),
    "stall": (R_STALL,),
    "attention-logit-growth": (R_QK_NORM, R_LOWER_LR_2),
    "output-logit-drift": (R_Z_LOSS,),
    "restart": (R_RESTART,),
    "lr-schedule": (R_WARMUP, R_WARN_LR_JUMP),
    "rank-divergence": (R_RANK,),
}
R_OVERFIT = Rule("overfitting", "Keep the best checkpoint; regularise",
                 "Validation loss rising while training loss falls is overfitting, not instability: the "
                 "optimizer is fine, the model is memorising.", ("Prechelt 1998, \"Early Stopping - But When?\"",),
                 lambda f, run: [
                     f"keep the checkpoint at or near step {f.evidence.get('best_val_step', f.step_start)} "
                     f"(best validation loss {fmt(float(f.evidence.get('best_val_loss', float('nan'))))}) "
                     "or stop early there (e.g. load_best_model_at_end / EarlyStopping)",
                     "for longer training: more data or augmentation, more weight decay or dropout, fewer epochs"])

# Info-level overflow findings are the benign scale search: answer with reassurance, not a fix.
INFO_RULES: Mapping[str, tuple[Rule, ...]] = {"fp16-overflow": (R_SCALE_INFO,)}
# A loss spike that recovered is not a reason to rewind (detection.md, section c).
TRANSIENT_SPIKE_RULES = (R_SKIP_UPDATE, R_ADAPTIVE_CLIP, R_CLIP, R_BETA2)


def rules_for(f: Finding) -> tuple[Rule, ...]:
    if f.severity is Severity.INFO and f.kind in INFO_RULES:
        return INFO_RULES[f.kind]
    if f.kind == "loss-spike" and f.evidence.get("recovered") is True:
        return TRANSIENT_SPIKE_RULES
    if f.kind == "divergence" and f.evidence.get("overfitting") is True:
        return (R_OVERFIT,)
    return RULES.get(f.kind, ())


def _ref(f: Finding) -> str:
    where = f"@{f.step_start}" if f.step_start is not None else ""
    return f"{f.kind}{where}"


def suggest(findings: Sequence[Finding], runs: Mapping[str, RunData]) -> list[Remedy]:
    """Rank remedies per run: worst finding first, then each kind's own priority; merge duplicates.

    A remedy that several findings call for appears once, ranked by the worst of them, with its
    actions from the first (worst) finding and every finding listed in ``addresses``.
    """
    out: list[Remedy] = []
    for run_name in dict.fromkeys(f.run for f in findings):
        run = runs.get(run_name) or RunData(name=run_name, series={})
        ordered = sorted((f for f in findings if f.run == run_name),
                         key=lambda f: (-f.severity, f.step_start if f.step_start is not None else -1))
        merged: dict[str, dict[str, Any]] = {}
        for f in ordered:
            for prio, rule in enumerate(rules_for(f)):
                key = (-int(f.severity), prio)
                if rule.id in merged:
                    entry = merged[rule.id]
                    entry["addresses"].append(_ref(f))
                    entry["key"] = min(entry["key"], key)
                    continue
                merged[rule.id] = {"rule": rule, "finding": f, "key": key, "addresses": [_ref(f)],
                                   "actions": tuple(rule.actions(f, run))}
        ranked = sorted(merged.values(), key=lambda e: e["key"])
        for rank, e in enumerate(ranked, start=1):
            rule: Rule = e["rule"]
            out.append(Remedy(id=rule.id, kind=e["finding"].kind, run=run_name, rank=rank,
                              title=rule.title, actions=e["actions"], why=rule.why,
                              references=rule.references,
                              addresses=tuple(dict.fromkeys(e["addresses"]))))
    return out


# ============================================================================ RL fine-tuning
# Remedies for the rl-* kinds (issue 20), in each framework's own terms: TRL GRPOConfig/RLOOConfig/
# DPOConfig fields, verl config paths. Sources: DAPO (Yu et al. 2025, arXiv:2503.14476: clip-higher
# epsilon_high 0.28, dynamic sampling, overlong shaping), Cui et al. 2025 (arXiv:2505.22617,
# entropy mechanism: Clip-Cov/KL-Cov), DeepSeekMath (Shao et al. 2024, arXiv:2402.03300: beta
# 0.04), Azar et al. 2023 (IPO, arXiv:2310.12036), TRL and verl docs.
DAPO = "Yu et al. 2025 (DAPO), arXiv:2503.14476"
CUI_ENTROPY = "Cui et al. 2025, The Entropy Mechanism of RL for Reasoning LMs, arXiv:2505.22617"
DEEPSEEKMATH = "Shao et al. 2024 (DeepSeekMath, GRPO), arXiv:2402.03300"
IPO = "Azar et al. 2023 (IPO), arXiv:2310.12036"
TRL_GRPO_DOCS = "TRL GRPOConfig docs (beta, epsilon_high, num_generations, mask_truncated_completions)"
VERL_DOCS = "verl config docs (kl_loss_coef, entropy_coeff, clip_ratio_high, rollout correction)"
YAO_TIS = "Yao et al. 2025, Your Efficient RL Framework Secretly Brings You Off-Policy RL Training"
PPO_DETAILS = "Huang et al. 2022, The 37 Implementation Details of PPO (ICLR blog track)"


def _rl_lr(factor: float) -> Actions:
    return _lr_actions(factor, f"lower the policy LR {1 / factor:g}x")


def _rl_kl_actions(f: Finding, run: RunData) -> list[str]:
    return [*_rl_lr(0.2)(f, run),
            "raise the KL coefficient: TRL `beta` (0.04 as in DeepSeekMath if it is 0 or below; 2x if not), "
            "verl `actor_rollout_ref.actor.kl_loss_coef` (e.g. 0.001 -> 0.01) with `use_kl_loss=True`",
            "read a few completions from the steps after the onset: a reward that is being gamed shows there"]


def _rl_entropy_actions(f: Finding, run: RunData) -> list[str]:
    at = f.evidence.get("collapse_step") or f.evidence.get("projected_floor_step")
    keep = f" (keep a checkpoint from before step {at})" if at else ""
    return ["widen the upper clip so rare tokens can still grow: TRL `epsilon_high=0.28`, verl "
            "`actor_rollout_ref.actor.clip_ratio_high=0.28` (DAPO clip-higher)",
            "add an entropy bonus or a KL anchor: verl `actor_rollout_ref.actor.entropy_coeff=0.001`; TRL `beta=0.04` "
            "if it is 0",
            f"sample with more diversity (temperature 1.0 or above) and lower the LR{keep}"]


def _rl_length_actions(f: Finding, run: RunData) -> list[str]:
    cap = f.evidence.get("cap")
    capt = f" of {fmt(float(cap))} tokens" if isinstance(cap, int | float) else ""
    return ["stop rewarding truncated answers: TRL `mask_truncated_completions=True`; verl: filter or penalise "
            f"overlong responses (DAPO overlong reward shaping) at the cap{capt}",
            "make the reward length-neutral: score correctness, not volume; add a length penalty "
            "or normalise per-token rewards (TRL `loss_type=\"dr_grpo\"` removes GRPO's length bias)",
            "inspect the longest completions of late steps for padding, repetition or keyword stuffing"]


def _rl_truncation_actions(f: Finding, run: RunData) -> list[str]:
    cap = f.evidence.get("cap")
    capt = fmt(float(cap)) if isinstance(cap, int | float) else "the current cap"
    return [f"raise TRL `max_completion_length` / verl `data.max_response_length` above {capt} if answers need it, "
            "or set TRL `mask_truncated_completions=True` so cut answers do not count"]


def _rl_zero_actions(f: Finding, run: RunData) -> list[str]:
    verdict = f.evidence.get("pass")
    if verdict == "none":
        return ["check the grader on a handful of hand-written right answers: a broken verifier pays nothing",
                "use easier prompts or an SFT warm start until some completions earn the reward; raise TRL "
                "`num_generations` (e.g. 8 -> 16) so rare successes appear in a group"]
    if verdict == "all":
        return ["use harder prompts: drop the ones every completion already solves (DAPO dynamic sampling; verl "
                "`algorithm.filter_groups.enable=True`)"]
    return ["drop groups whose rewards are all equal and sample more (DAPO dynamic sampling; verl "
            "`algorithm.filter_groups.enable=True`); raise TRL `num_generations`",
            "check whether the equal rewards are all passes (too easy) or all failures (too hard or a broken grader)"]


def _rl_clip_actions(f: Finding, run: RunData) -> list[str]:
    return [*_rl_lr(0.5)(f, run),
            "fewer updates per batch: TRL `num_iterations` (1 is on-policy), verl `actor_rollout_ref.actor.ppo_epochs`",
            "if the upper side saturates: TRL `epsilon_high=0.28` / verl `clip_ratio_high=0.28` (DAPO)"]


def _rl_logprob_actions(f: Finding, run: RunData) -> list[str]:
    return ["keep importance-sampling correction on: TRL `vllm_importance_sampling_correction=True` (truncation at "
            "`vllm_importance_sampling_clip_max`, 3.0); verl `algorithm.rollout_correction` with token-level IS",
            "compute the LM head / log-softmax in fp32 on both sides and check that weights are synced to the engine "
            "every step", "compare one batch's log-probs from engine and trainer by hand to find the layer that differs"]


def _rl_value_actions(f: Finding, run: RunData) -> list[str]:
    return ["lower the critic LR (verl `critic.optim.lr`) and warm the critic up before the policy moves "
            "(verl `trainer.critic_warmup`)",
            "clip the value update (TRL PPO `cliprange_value`, verl `critic.cliprange_value`) and whiten rewards",
            "or drop the critic: GRPO/RLOO estimate advantages from groups"]


def _rl_pref_actions(f: Finding, run: RunData) -> list[str]:
    best = f.evidence.get("best_step", f.step_start)
    return [f"keep the checkpoint at or near step {best} (best held-out preference loss) and stop there",
            "fewer epochs or more preference pairs; a larger DPO `beta` (0.1 -> 0.3) keeps the policy nearer the "
            "reference", "or a loss that bounds the margin: TRL DPOConfig `loss_type=\"ipo\"`"]


R_RL_KL = Rule("rl-kl", "Hold the policy near its reference", "A KL that grows without reward gain is the policy "
               "moving for nothing; a smaller step and a stronger KL anchor stop it.",
               (DEEPSEEKMATH, TRL_GRPO_DOCS, VERL_DOCS), _rl_kl_actions)
R_RL_ENTROPY = Rule("rl-entropy", "Keep exploration alive", "Reward gains come from spending entropy; once it is "
                    "gone the policy stops finding better answers.", (CUI_ENTROPY, DAPO, VERL_DOCS),
                    _rl_entropy_actions)
R_RL_LENGTH = Rule("rl-length", "Stop paying for length", "A reward that grows with length is gamed by running to "
                   "the cap.", (DAPO, TRL_GRPO_DOCS), _rl_length_actions)
R_RL_TRUNC = Rule("rl-truncation", "Let answers finish, or do not count cut ones",
                  "Truncated completions have no ending for the reward to judge.", (TRL_GRPO_DOCS, DAPO),
                  _rl_truncation_actions)
R_RL_ZERO = Rule("rl-zero-signal", "Give the groups something to compare", "With equal rewards in a group every "
                 "advantage is 0: the compute teaches nothing.", (DAPO, DEEPSEEKMATH), _rl_zero_actions)
R_RL_CLIP = Rule("rl-clip", "Take smaller policy steps", "Tokens at the clip give no gradient; many of them mean the "
                 "update outran its data.", (DAPO, PPO_DETAILS), _rl_clip_actions)
R_RL_LOGPROB = Rule("rl-logprob", "Align the trainer with the inference engine", "Samples from a policy other "
                    "than the trained one make every update silently off-policy.", (YAO_TIS, TRL_GRPO_DOCS, VERL_DOCS),
                    _rl_logprob_actions)
R_RL_VALUE = Rule("rl-value", "Stabilise the critic", "A critic worse than the mean adds noise to every advantage.",
                  (PPO_DETAILS, VERL_DOCS), _rl_value_actions)
R_RL_PREF = Rule("rl-pref-overfit", "Stop at the best held-out preference loss", "Past full train accuracy DPO only "
                 "widens margins, which does not transfer.", (IPO, "TRL DPOTrainer docs"), _rl_pref_actions)
R_RL_NONFINITE = Rule("rl-nonfinite", "Find where the non-finite value comes from", "A NaN/Inf reward or KL "
                      "poisons advantages or the KL term; RL trainers often hide it from the loss.",
                      (HF_NAN_FILTER,), lambda f, run: _rl_nonfinite_actions(f, run))


def _rl_nonfinite_actions(f: Finding, run: RunData) -> list[str]:
    if f.metric.startswith(("rl/reward", "rl/score", "rl/rewards/")):
        first = (f"call the reward functions on the completions of step {f.step_start} and clip or reject "
                 "non-finite rewards (a +inf reward zeroes its group's advantages; a NaN poisons them)")
    else:
        first = (f"{f.metric} went non-finite at step {f.step_start}: look for -inf log-probs (a token the "
                 "reference or the engine gives probability 0) and for empty or fully masked completions")
    return [first, "set logging_nan_inf_filter=False to see NaN losses as they happen"]

RULES = {**RULES, "rl-kl-blowup": (R_RL_KL,), "rl-entropy-collapse": (R_RL_ENTROPY,),
         "rl-length-hacking": (R_RL_LENGTH,), "rl-zero-signal": (R_RL_ZERO,), "rl-clip-saturation": (R_RL_CLIP,),
         "rl-logprob-mismatch": (R_RL_LOGPROB,), "rl-value-divergence": (R_RL_VALUE,),
         "rl-preference-overfit": (R_RL_PREF,), "rl-nonfinite": (R_RL_NONFINITE,)}
INFO_RULES = {**INFO_RULES, "rl-length-hacking": (R_RL_TRUNC,)}
