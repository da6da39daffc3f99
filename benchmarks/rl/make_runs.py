"""Real RL fine-tuning runs with TRL on CPU, one healthy and one per provokable failure.

    OMP_NUM_THREADS=1 python benchmarks/rl/make_runs.py [--out DIR] [--only NAME ...] [--steps N]

Each run trains a tiny causal LM (2 layers, 64 wide, built locally: no download) with a
character-level tokenizer, GRPO/RLOO with 4 prompts x 8 completions of at most 48 tokens, or DPO
on a tiny preference set, and writes TRL's own ``trainer_state.json`` to ``DIR/<name>/``.
``labels.json`` beside them names the events each run shows (the benchmark labels). Labels
follow the observable definitions of issue 20 (e.g. length hacking = length to the cap, truncation
towards 1, length and reward rising together), whatever the reward was meant to pay.
The tokenizer's WordLevel decoder joins characters with spaces, so the rewards count characters of
"a b c"-style strings (the share of 'a' tops out at 0.5; the length reward at about 2).

The failures are provoked the way they happen in practice: a reward that pays length, a reward
that is never earned, a reward that is always earned, a high LR with beta > 0 and a rarely earned
reward, beta = 0 with a sharp reward, several PPO iterations per batch at a high LR, a reward
function that returns +inf, and DPO on eight preference pairs for many epochs.
Needs the ``trl`` package (not a stabdiag dependency); takes about 2-4 minutes per run on one
CPU thread.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = Path.home() / ".cache" / "stabdiag-bench" / "rl"
ALPHABET = "abcdefghijklmnopqrstuvwxyz .,?!"
MAX_LEN = 48


def tokenizer():
    """A character-level fast tokenizer: one id per character, plus <pad>/<s>/</s>."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>"]
    vocab = {t: i for i, t in enumerate(specials + list(ALPHABET))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    fast.padding_side = "left"
    return fast


def tiny_model(vocab: int, seed: int, where: Path) -> str:
    """Build and save the model; TRL builds its reference model from the path, so pass that."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(cfg).save_pretrained(where)
    return str(where)


# --- rewards (TRL signature: completions, **kwargs -> list[float]) ---------------------------


def r_frac_a(completions, **kw):
    """Healthy: the share of 'a' characters (learnable, bounded, not tied to length)."""
    return [c.count("a") / max(len(c), 1) for c in completions]


def r_length(completions, **kw):
    """Pays length: the policy learns to run to max_completion_length."""
    return [len(c) / MAX_LEN for c in completions]


def r_never(completions, **kw):
    """A grader nobody passes (a broken verifier): always 0."""
    return [1.0 if "zzzzz" in c else 0.0 for c in completions]


def r_always(completions, **kw):
    """A task every sample passes: always 1."""
    return [1.0 for _ in completions]


def r_rare(completions, **kw):
    """Rarely earned: 1 only when the completion starts with 'ab'."""
    return [1.0 if c.startswith("ab") else 0.0 for c in completions]


def r_flaky(completions, **kw):
    """Rarely earned and unlearnable: 1 for about 5 % of completions, by a hash of the text."""
    return [1.0 if zlib.crc32(c.encode()) % 20 == 0 else 0.0 for c in completions]


_NOISE = random.Random(0)


def r_noise(completions, **kw):
    """A rarely earned reward that no policy can learn: 1 with probability 0.05, whatever the text
    (a flaky grader). Seeded, so a run is reproducible."""
    return [1.0 if _NOISE.random() < 0.05 else 0.0 for _ in completions]


def r_sharp(completions, **kw):
    """Sharp: 1 when the first character is 'e', else 0."""
    return [1.0 if c[:1] == "e" else 0.0 for c in completions]


def r_inf(completions, **kw):
    """A reward function with an overflow: +inf for completions holding 'q q' (two q's in a row)."""
    return [math.inf if "q q" in c else c.count("a") / max(len(c), 1) for c in completions]


@dataclass(frozen=True)
class Case:
    name: str
    trainer: str  # grpo, rloo or dpo
    label: str  # the event kind it was built to show, or "" for healthy
    reward: Callable | None = None
    lr: float = 5e-4
    steps: int = 150
    cfg: dict = field(default_factory=dict)
    note: str = ""
    also: str = (
        ""  # further events the logged curves show (space-separated), checked by eye: neither
    )
    #                 found nor false alarms in the benchmark, whichever tool reports them


CASES = (
    Case(
        "grpo_healthy",
        "grpo",
        "",
        r_frac_a,
        5e-4,
        cfg={"beta": 0.04},
        note="share of 'a', beta 0.04",
    ),
    Case(
        "grpo_healthy_beta0",
        "grpo",
        "",
        r_frac_a,
        2e-4,
        cfg={"beta": 0.0},
        note="share of 'a', beta 0 (TRL default: no kl logged), LR 2e-4",
    ),
    Case(
        "grpo_beta0_drift",
        "grpo",
        "rl-entropy-collapse",
        r_frac_a,
        5e-4,
        cfg={"beta": 0.0},
        note="share of 'a', beta 0 at LR 5e-4: collapses to 'a a a ...' that never stops",
        also="rl-length-hacking",  # truncated share 0.34 -> 0.81 with the reward rising along
    ),
    Case("rloo_healthy", "rloo", "", r_frac_a, 5e-4, cfg={"beta": 0.04}, note="RLOO, share of 'a'"),
    Case(
        "grpo_length_hack",
        "grpo",
        "rl-length-hacking",
        r_length,
        5e-4,
        cfg={"beta": 0.04},
        note="reward pays length",
    ),
    Case(
        "grpo_never_earned",
        "grpo",
        "rl-zero-signal",
        r_never,
        5e-4,
        cfg={"beta": 0.04},
        note="reward never earned (too hard / grader broken)",
    ),
    Case(
        "grpo_always_earned",
        "grpo",
        "rl-zero-signal",
        r_always,
        5e-4,
        cfg={"beta": 0.04},
        note="reward always earned (too easy)",
    ),
    Case(
        "grpo_unreachable_hi_lr",
        "grpo",
        "rl-zero-signal",
        r_rare,
        2e-2,
        cfg={"beta": 0.1},
        note="LR 2e-2, beta 0.1, reward for completions starting 'ab' (unreachable: decoded 'a b ...')",
    ),
    Case(
        "grpo_hash_reward",
        "grpo",
        "rl-entropy-collapse",
        r_flaky,
        2e-2,
        cfg={"beta": 0.1},
        note="LR 2e-2, beta 0.1, reward for ~5% of texts by hash: collapses onto one rewarded string",
        also="rl-zero-signal",  # once collapsed every completion is that string: all rewards equal
    ),
    Case(
        "grpo_noise_reward",
        "grpo",
        "",
        r_noise,
        2e-2,
        cfg={"beta": 0.1},
        note="LR 2e-2, beta 0.1, a reward no policy can learn (5% at random): KL peaks at 0.3 and "
        "beta pulls it back; no named event",
    ),
    Case(
        "grpo_kl_blowup",
        "grpo",
        "rl-kl-blowup",
        r_noise,
        5e-2,
        cfg={"beta": 0.01},
        note="LR 5e-2 with beta 0.01 and a reward no policy can learn (5% at random)",
        also="rl-entropy-collapse",  # the policy jumps to one deterministic string (entropy 3.5 -> 0)
    ),
    Case(
        "grpo_entropy_collapse",
        "grpo",
        "rl-entropy-collapse",
        r_sharp,
        3e-3,
        cfg={"beta": 0.0},
        note="beta 0 with a sharp first-character reward",
        also="rl-length-hacking rl-zero-signal",  # collapsed policy never stops; then every sample passes
    ),
    Case(
        "grpo_clip_saturation",
        "grpo",
        "rl-clip-saturation",
        r_frac_a,
        1e-2,
        cfg={"beta": 0.04, "num_iterations": 4},
        note="4 PPO iterations per batch at LR 1e-2",
        also="rl-length-hacking",  # 'a a a ...' that never stops: truncated share 0.34 -> 0.95, reward along
    ),
    Case(
        "grpo_inf_reward",
        "grpo",
        "rl-nonfinite",
        r_inf,
        5e-4,
        cfg={"beta": 0.04},
        note="reward function returns +inf for some completions",
    ),
    Case(
        "dpo_overfit",
        "dpo",
        "rl-preference-overfit",
        None,
        1e-3,
        steps=0,
        note="DPO, 8 preference pairs, 60 epochs, eval on 8 other pairs",
    ),
)


def prompts(n: int = 4) -> list[str]:
    return ["hello", "tell me", "what is", "say"][:n]


def grpo_like(case: Case, out: Path, steps: int, seed: int):
    from datasets import Dataset

    tok = tokenizer()
    model = tiny_model(len(tok), seed, out / "_init")
    ds = Dataset.from_dict({"prompt": prompts() * max(steps, 1)})
    common = dict(
        output_dir=str(out),
        per_device_train_batch_size=32,
        num_generations=8,
        max_completion_length=MAX_LEN,
        learning_rate=case.lr,
        max_steps=steps,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=seed,
        use_cpu=True,
        bf16=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        temperature=1.0,
        lr_scheduler_type="constant",
        max_grad_norm=1.0,
    )
    common.update(case.cfg)
    if case.trainer == "rloo":
        from trl import RLOOConfig, RLOOTrainer

        args, cls = RLOOConfig(**common), RLOOTrainer
    else:
        from trl import GRPOConfig, GRPOTrainer

        args, cls = GRPOConfig(**common), GRPOTrainer
    trainer = cls(
        model=model, reward_funcs=[case.reward], args=args, train_dataset=ds, processing_class=tok
    )
    trainer.train()
    trainer.save_state()


def dpo(case: Case, out: Path, seed: int):
    import random

    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    rng = random.Random(seed)

    def pairs(n):
        rows = {"prompt": [], "chosen": [], "rejected": []}
        for _ in range(n):
            p = "".join(rng.choice(ALPHABET[:26]) for _ in range(6))
            rows["prompt"].append(p)
            rows["chosen"].append("".join(rng.choice(ALPHABET[:26]) for _ in range(12)))
            rows["rejected"].append("".join(rng.choice(ALPHABET[:26]) for _ in range(12)))
        return Dataset.from_dict(rows)

    tok = tokenizer()
    model = tiny_model(len(tok), seed, out / "_init")
    # Chosen and rejected are random strings of the same letters: no rule to learn, so the eight
    # training pairs can only be memorised, and nothing of it transfers to the eval pairs.
    train, evald = pairs(8), pairs(8)
    args = DPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        num_train_epochs=60,
        learning_rate=case.lr,
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="no",
        report_to=[],
        seed=seed,
        use_cpu=True,
        disable_tqdm=True,
        beta=0.1,
        max_length=64,
        lr_scheduler_type="constant",
    )
    trainer = DPOTrainer(
        model=model, args=args, train_dataset=train, eval_dataset=evald, processing_class=tok
    )
    trainer.train()
    trainer.save_state()


def make(case: Case, root: Path, steps: int | None, seed: int) -> float:
    import torch

    torch.set_num_threads(1)
    out = root / case.name
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if case.trainer == "dpo":
        dpo(case, out, seed)
    else:
        grpo_like(case, out, steps or case.steps, seed)
    shutil.rmtree(out / "_init", ignore_errors=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--out", default=str(DEFAULT_OUT), help=f"where runs go (default {DEFAULT_OUT})"
    )
    ap.add_argument("--only", nargs="*", help="case names to (re)make; default: the missing ones")
    ap.add_argument("--steps", type=int, help="override the number of GRPO/RLOO steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    a = ap.parse_args()
    if a.list:
        for c in CASES:
            print(f"{c.name:24s} {c.trainer:5s} {c.label or 'healthy':24s} {c.note}")
        return
    root = Path(a.out)
    root.mkdir(parents=True, exist_ok=True)
    todo = [
        c
        for c in CASES
        if (c.name in a.only if a.only else not (root / c.name / "trainer_state.json").is_file())
    ]
    labels = {
        c.name: {"label": c.label, "also": c.also, "trainer": c.trainer, "note": c.note}
        for c in CASES
    }
    (root / "labels.json").write_text(json.dumps(labels, indent=1))
    for c in todo:
        print(f"[{time.strftime('%H:%M:%S')}] {c.name}: {c.note}", file=sys.stderr, flush=True)
        secs = make(c, root, a.steps, a.seed)
        print(
            f"[{time.strftime('%H:%M:%S')}] {c.name}: done in {secs:.0f}s",
            file=sys.stderr,
            flush=True,
        )


if __name__ == "__main__":
    main()
