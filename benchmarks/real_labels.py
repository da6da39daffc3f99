"""What a careful engineer calls each event in ../shared/real_logs, written before tuning on them.

Each folder was read by hand (the log itself, its PROVENANCE.md and config beside it) and every
event an ML engineer would want reported is a ``Label``: the class of event, the step range it
spans, the lowest severity that does it justice and, where a finding above some severity would be
wrong, the highest. ``Allowed`` marks things that are defensible either way (not scored as a miss,
not as a false alarm). Any other finding at warning or above is a false alarm; an error-severity
finding outside an error label is an error false alarm (the issue's hard floor is zero of those).

Folders marked "added later" came without labels; their labels below are ours, with the reasoning.
"""

from __future__ import annotations

from dataclasses import dataclass

INFO, WARNING, ERROR = "info", "warning", "error"


@dataclass(frozen=True)
class Label:
    folder: str
    cls: str  # loss_spike grad_spike grad_explosion fp16 divergence stall nonfinite restart overfit
    start: int
    end: int
    min_severity: str = WARNING
    max_severity: str = ERROR
    run: str = ""  # substring of the run name ("" = the folder's only run)
    note: str = ""


@dataclass(frozen=True)
class Allowed:
    folder: str
    kinds: tuple[str, ...]  # finding kinds that may appear here without counting as a false alarm
    start: int = 0
    end: int = 10**12
    run: str = ""
    max_severity: str = WARNING
    note: str = ""


# Kinds -> benchmark classes (one finding kind can stand for several classes).
KIND_CLASSES = {
    "loss-spike": {"loss_spike"},
    "grad-spike": {"grad_spike"},
    "grad-explosion": {"grad_explosion"},
    "fp16-overflow": {"fp16"},
    "divergence": {"divergence", "overfit"},
    "stall": {"stall"},
    "nonfinite": {"nonfinite", "divergence"},
    "restart": {"restart"},
    "lr-schedule": {"lr_schedule"},
    "rank-divergence": {"rank"},
    "attention-logit-growth": {"attn"},
    "output-logit-drift": {"logz"},
}

LABELS: tuple[Label, ...] = (
    # --- folders with phenomena documented in INDEX.md ---------------------------------------
    Label(
        "bigscience_chronicles",
        "loss_spike",
        29050,
        29090,
        run="tr1-13B",
        note="lm loss 2.77 -> 8.72 while the loss scale falls 65536 -> 4096; back to 2.72 by 33240",
    ),
    Label(
        "bigscience_chronicles",
        "fp16",
        29050,
        29060,
        run="tr1-13B",
        note="scale 65536 -> 8192 -> 4096 at the spike: a real overflow burst, 14 000 steps into a "
        "fragment, not start-up",
    ),
    Label(
        "bigscience_chronicles",
        "grad_explosion",
        31215,
        31222,
        run="tr11-176B",
        min_severity=WARNING,
        note="grad norm 0.24 -> 960 over 5 iterations, loss 2.2 -> 5.1, recovered by 31250",
    ),
    Label("bigscience_chronicles", "loss_spike", 31216, 31222, run="tr11-176B"),
    Label(
        "bigscience_chronicles",
        "loss_spike",
        6920,
        7010,
        run="tr8-104B-wide",
        note="6.37 -> 11.4 with grad norm 1e5 -> 2.8e5: the 104B-wide instability",
    ),
    Label("bigscience_chronicles", "restart", 6900, 11448, run="tr8-104B-wide", min_severity=INFO),
    Label("bigscience_chronicles", "grad_explosion", 8740, 8743, run="tr8-104B-wide"),
    Label("bigscience_chronicles", "loss_spike", 8740, 8743, run="tr8-104B-wide"),
    Label(
        "bigscience_chronicles", "nonfinite", 9027, 9027, run="tr8-104B-wide", min_severity=ERROR
    ),
    Label("bigscience_chronicles", "loss_spike", 11448, 11448, run="tr8-104B-wide"),
    Label(
        "bigscience_chronicles",
        "divergence",
        17062,
        17068,
        run="tr8b-104B",
        min_severity=WARNING,
        note="loss 2.42 -> 4.4 with overflow skips at the end of the excerpt",
    ),
    Label("bigscience_chronicles", "fp16", 17062, 17068, run="tr8b-104B"),
    Label(
        "hf_deepspeed_bigscience",
        "fp16",
        0,
        2,
        min_severity=INFO,
        max_severity=INFO,
        note="two skips while the scaler searches down at start-up: benign",
    ),
    Label("megatron_bigscience_gpt2", "loss_spike", 3, 14, run="ds-on", note="12.4 -> 43.1, early"),
    Label(
        "megatron_bigscience_gpt2", "loss_spike", 30, 40, run="dp1_tp4", note="12.5 -> 32.8, early"
    ),
    Label(
        "megatron_bigscience_gpt2",
        "fp16",
        1,
        30,
        run="dp1_tp4",
        min_severity=INFO,
        max_severity=INFO,
    ),
    Label(
        "megatron_bigscience_gpt2",
        "fp16",
        1,
        4,
        run="perf_n16",
        min_severity=INFO,
        max_severity=INFO,
    ),
    Label(
        "hf_trainer_state_star_gradspikes",
        "grad_spike",
        4700,
        39280,
        max_severity=WARNING,
        note="grad norm 30-82 vs ~4-6, 28 times, the loss does not respond",
    ),
    Label(
        "hf_trainer_state_whisper_fp16",
        "overfit",
        1000,
        5000,
        min_severity=INFO,
        max_severity=INFO,
        note="eval loss 0.32 -> 0.42 while train loss -> 1e-4",
    ),
    Label("tb_keras_tf2_tensor", "overfit", 6, 9, min_severity=INFO, max_severity=INFO),
    Label("tb_torch_duplicate_steps", "restart", 90, 99, min_severity=INFO, max_severity=INFO),
    Label(
        "wandb_offline_lion",
        "stall",
        880,
        4041,
        min_severity=WARNING,
        note="loss pinned at ln 2 = 0.693 with the grad norm collapsing: collapse to chance",
    ),
    Label(
        "wandb_offline_lion", "loss_spike", 3, 13, note="0.43 -> 4.66 at LR 0.003 without warm-up"
    ),
    # --- added later: our own labels ------------------------------------------------------------
    # cs336 LR sweep (config.json beside each: vocab 10 000 -> ln V = 9.21, 250 warm-up steps,
    # cosine to 0 over 5 000 steps, clip 1.0).
    Label(
        "cs336_tinystories_lr1",
        "divergence",
        110,
        4000,
        min_severity=ERROR,
        note="peak LR 1.0: train loss leaves 13.9 (step 10) for 66 at step 210 and up to 702.7 at step "
        "1020; chaotic (10-540) until the cosine LR falls to ~0.1 at step ~4000; ends 4.4, far "
        "worse than the 3e-3 cell (1.6)",
    ),
    Label(
        "cs336_tinystories_lr1e-1",
        "divergence",
        110,
        2100,
        min_severity=WARNING,
        note="peak LR 0.1: train loss bottoms at ~4.15 near step 110 (end of the fast drop, LR still "
        "warming up), then rises to ~5.0 by steps 1300-2000 with val 4.17 -> 5.71 (step 2000), "
        "and only comes down as the cosine LR decays; recovered (ends 3.3), so a warning",
    ),
    # lr3e-3: healthy (val 3.52 -> 1.62): no labels.
    Label(
        "lightning_pinn",
        "nonfinite",
        218,
        261,
        min_severity=ERROR,
        note="mean_loss (the mean of the four *_loss terms) NaN from step 218 to the end, every term NaN",
    ),
    Label(
        "dschat_rm_opt350m",
        "fp16",
        480,
        570,
        min_severity=WARNING,
        max_severity=WARNING,
        note="after the start-up search (65536 -> 64 in the first 10 steps) the scale falls again from "
        "512 to 8 between steps ~480 and ~565 (6 skips in 90 steps): overflowing at a scale of "
        "8-512 is fp16 range trouble; it grows back to 4096 and the reward model trains "
        "(acc 0.49 -> 0.70), so a warning",
    ),
    Label(
        "dschat_sft_opt13b",
        "fp16",
        0,
        10,
        min_severity=INFO,
        max_severity=INFO,
        note="6 skips during start-up, then the routine DeepSpeed sawtooth (hysteresis + 65536 -> 32768 "
        "every ~100 steps, loss_scale_window 100): healthy at any frequency",
    ),
    Label(
        "dschat_rlhf_ppo",
        "fp16",
        0,
        60,
        min_severity=INFO,
        max_severity=INFO,
        note="two engines search down from 65536 in the first steps, then probe: healthy; reward "
        "-0.68 -> 4.5",
    ),
    # mng_scaleshortcuts_19k: healthy 19k-step run; single-batch train-loss outliers (3.3 -> 5.9 for
    # one step) are data, at most info. mng_mtp_val_every10: healthy, val-only, 4.15 -> 4.34 -> 4.16
    # bump at step 670 is at most info. megads_gpt3_125m_tokendrop: healthy, scale grows 2048 ->
    # 32768. llmc_gpt2_124m: healthy; one isolated grad-norm spike (0.28 -> 4.29 at 8715) with no
    # loss response: at most info. hf_medalpaca13b: healthy 6-epoch fine-tune whose train loss drops
    # at each epoch boundary (memorisation; no eval loss logged). trl_grpo_chaos_economy: healthy.
)

ALLOWED: tuple[Allowed, ...] = (
    Allowed(
        "bigscience_chronicles",
        (
            "loss-spike",
            "fp16-overflow",
            "restart",
            "grad-spike",
            "divergence",
            "nonfinite",
            "grad-explosion",
        ),
        run="tr8-104B-wide",
        note="excerpts of an unstable run around a rollback: every flagged point is near trouble",
    ),
    Allowed(
        "bigscience_chronicles", ("loss-spike",), run="tr1-13B", note="the spike's later fragment"
    ),
    Allowed("megatron_bigscience_gpt2", ("fp16-overflow",), run="ds-on", max_severity=INFO),
    Allowed("llmc_modded_nanogpt", ("grad-spike",), note="4 grad spikes up to 7.5x, documented"),
    Allowed("llmc_gpt2_124m", ("grad-spike",), max_severity=INFO),
    Allowed("mng_scaleshortcuts_19k", ("loss-spike",), max_severity=INFO),
    Allowed("mng_mtp_val_every10", ("loss-spike",), max_severity=INFO),
    Allowed(
        "wandb_offline_lion",
        ("lr-schedule", "loss-spike"),
        note="no warm-up at LR 3e-3; small spikes",
    ),
    Allowed(
        "lightning_pinn",
        ("loss-spike", "grad-spike"),
        end=217,
        note="a PINN loss falling over 12 orders of magnitude jumps by several x between steps",
    ),
    Allowed(
        "cs336_tinystories_lr1", ("loss-spike", "lr-schedule"), note="inside the chaotic phase"
    ),
    Allowed("cs336_tinystories_lr1e-1", ("loss-spike", "lr-schedule")),
    Allowed(
        "dschat_sft_opt13b",
        ("divergence",),
        max_severity=INFO,
        note="val ppl 1.803 -> 1.809 over the last two of 16 epochs: mild overfitting, info at most",
    ),
    Allowed("hf_medalpaca13b", ("divergence", "stall"), max_severity=INFO),
)
