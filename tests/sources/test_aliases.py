"""The alias table: every known spelling, and the traps (loss scale, HF run average, two candidates)."""

from __future__ import annotations

import pytest

from stabdiag import table as T
from stabdiag.sources.aliases import Context, canonical, resolve


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("loss", T.TRAIN_LOSS),
        ("train/loss", T.TRAIN_LOSS),
        ("train_loss", T.TRAIN_LOSS),
        ("train_loss_step", T.TRAIN_LOSS),
        ("lm loss", T.TRAIN_LOSS),
        ("LM Loss", T.TRAIN_LOSS),
        ("lm loss vs samples", T.TRAIN_LOSS),
        ("reduced_train_loss", T.TRAIN_LOSS),
        ("loss/train/total", T.TRAIN_LOSS),
        ("train/CE loss", T.TRAIN_LOSS),
        ("loss_metrics/global_avg_loss", T.TRAIN_LOSS),
        ("Train/Samples/train_loss", T.TRAIN_LOSS),
        ("epoch_loss", T.TRAIN_LOSS),
        ("trl", T.TRAIN_LOSS),
        ("eval_loss", T.VAL_LOSS),
        ("eval/loss", T.VAL_LOSS),
        ("val_loss", T.VAL_LOSS),
        ("validation/epoch_loss", T.VAL_LOSS),
        ("lm loss validation", T.VAL_LOSS),
        ("validation_metrics/loss", T.VAL_LOSS),
        ("tel", T.VAL_LOSS),
        ("grad_norm", T.GRAD_NORM),
        ("train/grad_norm", T.GRAD_NORM),
        ("gnorm", T.GRAD_NORM),
        ("grad-norm", T.GRAD_NORM),
        ("grad_2.0_norm_total", T.GRAD_NORM),
        ("optim/total grad norm", T.GRAD_NORM),
        ("l2_norm/grad/global", T.GRAD_NORM),
        ("learning_rate", T.LR),
        ("train/learning_rate", T.LR),
        ("lr", T.LR),
        ("lr-AdamW", T.LR),
        ("lr-AdamW/pg1", T.LR),
        ("optim/LR (group 0)", T.LR),
        ("learning-rate", T.LR),
        ("lr-DecoupledAdamW/group0", T.LR),
        ("Train/Samples/lr", T.LR),
        ("loss_scale", T.LOSS_SCALE),
        ("loss-scale", T.LOSS_SCALE),
        ("loss scale", T.LOSS_SCALE),
        ("Train/Samples/loss_scale", T.LOSS_SCALE),
        ("loss-scale vs samples", T.LOSS_SCALE),
        ("skipped", T.SKIPPED_STEP),
        ("optim/step skipped", T.SKIPPED_STEP),
        ("max_attention_logit", T.MAX_ATTN_LOGIT),
        ("params-norm", T.PARAM_NORM),
        ("throughput(tps)", T.TOKENS_PER_S),
        ("grad_2.0_norm/layer.0.weight", "train/grad_norm/layer.0.weight"),
        ("layers.3.grad_norm", "train/grad_norm/layers.3"),
        ("train/layers.3.grad_norm", "train/grad_norm/layers.3"),
        ("grad_norm/attn", "train/grad_norm/attn"),
    ],
)
def test_known_spellings(raw, expected):
    assert canonical(raw)[0] == expected


@pytest.mark.parametrize(
    "raw",
    [
        "train/train_loss",
        "eval/runtime",
        "my_metric",
        "epoch",
        "grad_norm_square",
        "train/epoch",
        "loss_scale_window",
        "grad_norm_clipped",
        "eval/layers.1.grad_norm",
    ],
)
def test_not_taken_as_a_canonical_metric(raw):
    name, why = canonical(raw)
    assert name == raw and why


def test_loss_scale_is_never_loss():
    m = resolve(["loss_scale", "loss-scale", "Train/Samples/loss_scale"])
    assert all(x.name != T.TRAIN_LOSS for x in m.values())


def test_step_beats_epoch_candidate():
    m = resolve(["train_loss_epoch", "train_loss_step", "val_loss"])
    assert m["train_loss_step"].name == T.TRAIN_LOSS
    assert m["train_loss_epoch"].name == "train_loss_epoch"
    assert "train_loss_step" in m["train_loss_epoch"].why
    assert resolve(["train_loss_epoch"])["train_loss_epoch"].name == T.TRAIN_LOSS


def test_vs_samples_variant_loses_to_steps():
    m = resolve(["lm loss vs samples", "lm loss"])
    assert (
        m["lm loss"].name == T.TRAIN_LOSS and m["lm loss vs samples"].name == "lm loss vs samples"
    )


def test_lowest_param_group_wins():
    m = resolve(["lr-AdamW/pg1", "lr-AdamW/pg0"])
    assert m["lr-AdamW/pg0"].name == T.LR and m["lr-AdamW/pg1"].name == "lr-AdamW/pg1"


def test_override_beats_table_and_does_not_collide():
    m = resolve(["train/loss", "my_tag"], overrides={T.TRAIN_LOSS: "my_tag"})
    assert m["my_tag"].name == T.TRAIN_LOSS and "--map" in m["my_tag"].why
    assert m["train/loss"].name != T.TRAIN_LOSS


def test_val_split_context():
    assert canonical("loss", Context(split="val"))[0] == T.VAL_LOSS


# Every spelling the stdout/store readers emit, with the metric it must become (one table maps them).
READER_SPELLINGS = [
    ("skipped_step", "train/skipped_step"),
    ("loss scale", "train/loss_scale"),
    ("loss", "train/loss"),
    ("gnorm", "train/grad_norm"),
    ("lr", "train/lr"),
    ("loss_scale", "train/loss_scale"),
    ("valid_loss", "val/loss"),
    ("trl", "train/loss"),
    ("tel", "val/loss"),
    ("norm", "train/grad_norm"),
    ("train_loss", "train/loss"),
    ("val_loss", "val/loss"),
    ("tok/s", "train/tokens_per_s"),
    ("lm loss validation", "val/loss"),
    ("lm-loss validation", "val/loss"),
    ("lm loss value", "val/loss"),
    ("lm-loss", "train/loss"),
    ("learning rate", "train/lr"),
    ("grad norm", "train/grad_norm"),
    ("params norm", "train/param_norm"),
    ("eval_loss", "val/loss"),
    ("val loss", "val/loss"),
    ("grad_norm", "train/grad_norm"),
    ("validate loss", "val/loss"),
    ("tps", "train/tokens_per_s"),
    ("train_loss_local", "train/loss"),
    ("train_loss_epoch", "train/loss"),
]


@pytest.mark.parametrize(("raw", "metric"), READER_SPELLINGS)
def test_reader_spellings_map_in_the_one_table(raw, metric):
    assert canonical(raw)[0] == metric
