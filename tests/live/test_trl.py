"""StabdiagCallback in a real TRL SFTTrainer (a Trainer subclass): tiny GPT-2, character tokenizer
built locally, examples in order, a poisoned batch at a known step."""

from __future__ import annotations

import random

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from trl import SFTConfig, SFTTrainer  # noqa: E402

from stabdiag.integrations.hf import StabdiagCallback  # noqa: E402

ALPHABET = "abcdefghijklmnop"
NOISE = "qrstuvwxyz.,?! "
BATCH, POISON = 8, 50  # 0-based batch index -> global_step 51 when logged


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>"]
    vocab = {t: i for i, t in enumerate(specials + list(ALPHABET + NOISE))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )


def _texts(steps):
    rng = random.Random(0)
    out = []
    for k in range(steps):
        for _ in range(BATCH):
            if k == POISON:
                out.append("".join(rng.choice(NOISE) for _ in range(24)))
            else:
                s = rng.randrange(16)
                out.append("".join(ALPHABET[(s + i) % 16] for i in range(24)))
    return out


def test_sft_trainer_stops_at_the_spike(tmp_path):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = _tokenizer()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tok),
            n_positions=32,
            n_embd=32,
            n_layer=1,
            n_head=2,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        )
    )
    steps = 80
    args = SFTConfig(
        output_dir=str(tmp_path),
        max_steps=steps,
        per_device_train_batch_size=BATCH,
        learning_rate=3e-3,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        max_length=32,
        train_sampling_strategy="sequential",
        dataloader_num_workers=0,
    )
    ds = datasets.Dataset.from_dict({"text": _texts(steps)})
    cb = StabdiagCallback(action="stop", level="warning")
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[cb]
    )
    trainer.train()
    assert cb.monitor.stop_finding is not None and cb.monitor.stop_finding.kind == "loss-spike"
    assert cb.monitor.stop_finding.step_start == POISON + 1
    assert trainer.state.global_step == POISON + 1
