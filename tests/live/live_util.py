"""Tiny models and data for the live-guard tests: built locally on CPU, nothing downloaded.

The task is next-token counting mod 16 (learned to near-zero loss in a few dozen steps); a
poisoned batch is random tokens from the unused part of the vocabulary, so its loss is ~log(48)
against a baseline near zero: a real loss spike at a known step.
"""

from __future__ import annotations

import torch

VOCAB, SEQ, BATCH = 64, 16, 8


def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=VOCAB,
        n_positions=SEQ,
        n_embd=32,
        n_layer=1,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(cfg)


def batch(step: int, poison: frozenset[int] = frozenset(), seed: int = 0) -> torch.Tensor:
    """The batch the loop sees at (0-based) optimizer step ``step``."""
    g = torch.Generator().manual_seed(seed * 100003 + step)
    if step in poison:
        return torch.randint(16, VOCAB, (BATCH, SEQ), generator=g)
    start = torch.randint(0, 16, (BATCH, 1), generator=g)
    return (start + torch.arange(SEQ)) % 16


class StepData(torch.utils.data.IterableDataset):
    """Examples in a fixed order (no sampler shuffling): step k's batch is batch(k)."""

    def __init__(self, steps: int, poison: frozenset[int] = frozenset()) -> None:
        self.steps, self.poison = steps, poison

    def __iter__(self):
        for k in range(self.steps):
            for row in batch(k, self.poison):
                yield {"input_ids": row, "labels": row}


class Bigram(torch.nn.Module):
    """Next token from the current one: learns counting mod 16 in a few dozen steps."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(VOCAB, 32)
        self.out = torch.nn.Linear(32, VOCAB)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.out(self.emb(x[:, :-1]))
        return torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), x[:, 1:].reshape(-1))
