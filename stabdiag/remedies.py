"""Remedies as data: what to change, in priority order, in the run's own terms.

Each finding kind maps to an ordered list of ``Rule``s. A rule knows its title, why it helps,
where the advice comes from, which kind of change it is (``change``: one LR cut, one warm-up,
one clip per run), what to watch afterwards, and how to turn the finding, the run's series and
its configuration (``RunData.meta['run_config']``, runconfig.py) into concrete actions phrased
for the run's framework (HF ``max_grad_norm=``, Lightning ``gradient_clip_val=``, Megatron
``--clip-grad``, DeepSpeed config keys, ``stabdiag train --set``). A rule whose change the run
already makes (clipping at or below the value, beta2 <= 0.95, bf16 in a bf16 run, a warm-up for
an event after warm-up ended) returns no actions and is dropped.

``suggest`` ranks the rules of a run's findings, keeps one remedy per kind of change, orders
them by the run's diagnosis (diagnosis.py), and keeps at most MAX_PER_RUN.

Sources of the numbers (see docs/research/detection.md, section c):
- warm-up of at least 5% of the steps, AdamW beta2 0.95, clip 1.0, QK-layernorm and z-loss 1e-4:
  Wortsman et al. 2023, "Small-scale proxies for large-scale Transformer training instabilities".
- rewind about 100 steps before the spike and skip 200-500 batches: Chowdhery et al. 2022 (PaLM).
- lower the LR 2x: llm-foundry KillLossSpike's message; 10x for NaN at start: TensorBoard Debugger V2
  tutorial and common practice.
- QK-clip tau=100, alpha=0.5: Megatron-LM ``transformer_config.py``.
- bf16 instead of fp16 and fp32 softmax: DeepSpeed #931, Megatron ``--attention-softmax-in-fp32``.
- adaptive clipping z 2.5 / alpha 0.97: ZClip (Kumar et al. 2025).
- pre-LN over post-LN, and post-LN's need for warm-up: Xiong et al. 2020, arXiv:2002.04745.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stabdiag import runconfig as rcfg
from stabdiag import words
from stabdiag.diagnosis import Diagnosis, config_of, diagnose_all, no_warmup, warmup_end
from stabdiag.findings import Finding, Severity
from stabdiag.table import GRAD_NORM, LR, TRAIN_LOSS, RunData

WORTSMAN = "Wortsman et al. 2023, arXiv:2309.14322"
PALM = "Chowdhery et al. 2022 (PaLM), arXiv:2204.02311, section 5.1"
ZCLIP = "Kumar et al. 2025 (ZClip), arXiv:2504.02507"
LLM_FOUNDRY = "mosaicml/llm-foundry KillLossSpike callback"
MEGATRON_QKCLIP = (
    "NVIDIA/Megatron-LM transformer_config.py (qk_clip_threshold=100, qk_clip_alpha=0.5)"
)
DEEPSPEED_FP16 = "deepspeedai/DeepSpeed #931, #697 (benign scale search vs overflow)"
MEGATRON_FP32_SOFTMAX = "NVIDIA/Megatron-LM --attention-softmax-in-fp32"
OLMO2 = "OLMo 2 (Team OLMo 2025), arXiv:2501.00656"
TB_DEBUGGER = "TensorBoard Debugger V2 tutorial (tensorflow/tensorboard docs/debugger_v2.md)"
MEGATRON_RERUN = "NVIDIA/Megatron-LM rerun_state_machine.py (rerun on another GPU)"
HF_NAN_FILTER = "huggingface/trl #6702 (logging_nan_inf_filter hides NaN)"
XIONG = (
    "Xiong et al. 2020, On Layer Normalization in the Transformer Architecture, arXiv:2002.04745"
)

MAX_PER_RUN = 6


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
    change: str = ""
    watch: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "run": self.run,
            "rank": self.rank,
            "title": self.title,
            "actions": list(self.actions),
            "why": self.why,
            "references": list(self.references),
            "addresses": list(self.addresses),
            "change": self.change or self.id,
            "watch": self.watch,
        }


Actions = Callable[[Finding, RunData], list[str]]


@dataclass(frozen=True)
class Rule:
    """One remedy as data: its title, why it helps, its sources, and ``actions`` that turn a
    finding and its run into concrete steps with numbers from the run. Ranked into ``Remedy``."""

    id: str
    title: str
    why: str
    references: tuple[str, ...]
    actions: Actions
    change: str = ""  # the kind of change (one per run); "" = the id
    watch: str = ""  # what to watch after making it
    title_fn: Callable[[Finding, RunData], str | None] | None = None

    @property
    def kind_of_change(self) -> str:
        return self.change or self.id


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


def trusted_clip(f: Finding, run: RunData) -> float | None:
    """``healthy_clip`` from grad norms logged before the trouble began, only when there are
    enough of them (30) and they are finite and ordinary (a run that explodes from step 0 has no
    healthy grad norms: its p99 is the explosion, e.g. 6e8)."""
    s = run.get(GRAD_NORM)
    onset = f.step_start
    if s is None or onset is None:
        return None
    keep = (s.steps < onset) & np.isfinite(s.values) & (s.values > 0)
    if keep.sum() < 30:
        return None
    c = healthy_clip(
        f, RunData(name=run.name, series={GRAD_NORM: type(s)(s.steps[keep], s.values[keep])})
    )
    return c if c is not None and c < 1e3 else None


def _fw(run: RunData) -> str:
    return config_of(run).fw


def say(change: str, run: RunData, **kw: Any) -> str | None:  # noqa: ANN401
    """The change in the run's framework's own terms, or None when there is no such phrasing."""
    fw = _fw(run)
    v = kw.get("value")
    table: dict[str, dict[str, str]] = {
        "lr": {
            rcfg.HF: f"learning_rate={v}",
            rcfg.LIGHTNING: f"lr={v} in configure_optimizers",
            rcfg.MEGATRON: f"--lr {v}",
            rcfg.DEEPSPEED: f'"optimizer": {{"params": {{"lr": {v}}}}}',
            rcfg.STABDIAG: f"--set lr={v}",
        },
        "warmup": {
            rcfg.HF: f"warmup_steps={v}",
            rcfg.LIGHTNING: f"a linear warm-up over {v} steps in configure_optimizers (LinearLR(start_factor="
            f'0.01, total_iters={v}) with "interval": "step")',
            rcfg.MEGATRON: f"--lr-warmup-iters {v}",
            rcfg.DEEPSPEED: f'"scheduler": {{"type": "WarmupDecayLR", "params": {{"warmup_num_steps": {v}}}}}',
            rcfg.STABDIAG: f"--set warmup_steps={v}",
        },
        "clip": {
            rcfg.HF: f"max_grad_norm={v}",
            rcfg.LIGHTNING: f"Trainer(gradient_clip_val={v})",
            rcfg.MEGATRON: f"--clip-grad {v}",
            rcfg.DEEPSPEED: f'"gradient_clipping": {v}',
            rcfg.STABDIAG: f"--set grad_clip={v}",
        },
        "beta2": {
            rcfg.HF: "adam_beta2=0.95",
            rcfg.LIGHTNING: "betas=(0.9, 0.95) in configure_optimizers",
            rcfg.MEGATRON: "--adam-beta2 0.95",
            rcfg.DEEPSPEED: '"optimizer": {"params": {"betas": [0.9, 0.95]}}',
            rcfg.STABDIAG: "--set beta2=0.95",
        },
        "bf16": {
            rcfg.HF: "bf16=True, fp16=False",
            rcfg.LIGHTNING: 'Trainer(precision="bf16-mixed")',
            rcfg.MEGATRON: "--bf16 instead of --fp16",
            rcfg.DEEPSPEED: '"bf16": {"enabled": true} instead of "fp16"',
            rcfg.STABDIAG: "--set precision=bf16",
        },
        "qk-norm": {rcfg.MEGATRON: "--qk-layernorm", rcfg.STABDIAG: "--set qk_norm=true"},
        "z-loss": {rcfg.STABDIAG: "--set z_loss=1e-4"},
        "pre-ln": {rcfg.STABDIAG: "--set norm_placement=pre"},
    }
    return table.get(change, {}).get(fw)


def _with(text: str, change: str, run: RunData, **kw: Any) -> str:  # noqa: ANN401
    phrase = say(change, run, **kw)
    return f"{text}: {phrase}" if phrase else text


def _base_lr(f: Finding, run: RunData) -> tuple[float, str] | None:
    """The LR a cut is relative to: the configured peak, else the LR at the event, else the peak logged."""
    cfg = config_of(run)
    at = f.evidence.get("lr_at_onset") or lr_at(run, f.step_start)
    if isinstance(cfg.get("lr"), float) and cfg.get("lr") > 0:
        peak = float(cfg.get("lr"))
        if at and at < 0.9 * peak and (f.step_start or 0) <= (warmup_end(run, cfg) or 0):
            # it broke while still warming up: the LR it broke at, not the peak, is the unstable one
            return float(
                at
            ), f"the {fmt(at)} it broke at during warm-up (configured peak {rcfg.num(peak)})"
        return peak, f"the configured peak {rcfg.num(peak)}"
    if at:
        return float(at), f"the {fmt(at)} in force at step {f.step_start}"
    p = peak_lr(run)
    return (p, f"the peak {fmt(p)} logged") if p else None


def _lr_factor(f: Finding, run: RunData) -> float:
    """10x for a run that goes non-finite or runs away early (far past its stable LR), else 2x."""
    cfg = config_of(run)
    configured = cfg.get("total_steps") if isinstance(cfg.get("total_steps"), int) else 0
    total = max(configured, last_step(run))  # a log longer than its config (a resumed run) counts
    early = (f.step_start or 0) <= 0.15 * max(total, 1)
    if f.kind == "nonfinite" and early:
        return 0.1
    if f.kind == "divergence" and f.evidence.get("rule") == "runaway" and early:
        return 0.1
    if f.kind == "attention-logit-growth" and f.evidence.get("overflow_step") is not None and early:
        return 0.1
    return 0.5


def _lr_actions(factor: float | None, fallback: str) -> Actions:
    def actions(f: Finding, run: RunData) -> list[str]:
        base = _base_lr(f, run)
        k = factor if factor is not None else _lr_factor(f, run)
        if base is None:
            return [fallback if factor is not None else f"lower the peak LR {1 / k:g}x"]
        new = base[0] * k
        where = f" (the {f.kind} at step {f.step_start})" if f.step_start is not None else ""
        return [
            _with(
                f"lower the peak LR to {fmt(new)}, {1 / k:g}x below {base[1]}{where}",
                "lr",
                run,
                value=fmt(new),
            )
        ]

    return actions


def _warmup_len(f: Finding, run: RunData) -> tuple[int, str]:
    """Warm-up length in steps: 5% of the steps the run was configured for (Wortsman et al.), at
    least twice the step where trouble began; from the log's span only when the config is silent."""
    cfg = config_of(run)
    total = cfg.get("total_steps")
    onset = max(int(f.step_start or 0), 1)
    if isinstance(total, int) and total > 0:
        n = max(int(round(0.05 * total)), 1)
        why = f"5% of the {total} steps configured in {cfg.total_steps.short_source}"  # type: ignore[union-attr]
    else:
        span = last_step(run)
        n = max(int(round(0.05 * span)), 1)
        why = f"5% of the {span} steps logged; the config did not say how long the run was planned"
    if n < 2 * onset and 2 * onset <= 0.25 * max(total or last_step(run), 1):
        n, why = 2 * onset, f"twice step {onset}, where the trouble began"
    return n, why


def _warmup_actions(f: Finding, run: RunData) -> list[str]:
    cfg = config_of(run)
    had = no_warmup(run, cfg, [f])
    end = warmup_end(run, cfg)
    onset = f.step_start or 0
    if had is not None and not had[0] and end is not None and onset > end:
        return []  # the event came after warm-up ended: a warm-up does not answer it
    if cfg.get("warmup_other"):
        return []
    n, why = _warmup_len(f, run)
    total = cfg.get("total_steps") if isinstance(cfg.get("total_steps"), int) else last_step(run)
    if onset > max(2 * n, 0.15 * max(total or 1, 1)):
        return []  # a mid-run event: the LR had long reached its peak, a warm-up does not reach it
    cur = cfg.get("warmup_steps")
    if isinstance(cur, int) and cur >= n:
        return []
    verb = (
        f"lengthen the warm-up from {cur} to {n} steps"
        if isinstance(cur, int) and cur > 0
        else f"warm the LR up linearly over {n} steps"
    )
    return [_with(f"{verb} ({why})", "warmup", run, value=n)]


def _clip_title(f: Finding, run: RunData) -> str | None:
    c = _configured_clip(run)[0]
    if isinstance(c, float) and c > 0 and not _tighter_clip(f, run):
        return f"Keep the gradient clip at {rcfg.num(c)}"
    return None


def _tighter_clip(f: Finding, run: RunData) -> float | None:
    c = _configured_clip(run)[0]
    t = trusted_clip(f, run)
    if isinstance(c, float) and c > 0 and t is not None and t < 0.8 * c:
        return t
    return None


# Frameworks that clip at 1.0 unless told otherwise (HF max_grad_norm, Megatron --clip-grad).
_DEFAULT_CLIP = {rcfg.HF: "max_grad_norm", rcfg.MEGATRON: "--clip-grad"}


def _configured_clip(run: RunData) -> tuple[float | None, str]:
    cfg = config_of(run)
    c = cfg.get("clip")
    if c is None and cfg.fw in _DEFAULT_CLIP:
        return 1.0, f"{rcfg.FRAMEWORK_NAMES[cfg.fw]}'s default {_DEFAULT_CLIP[cfg.fw]} 1.0"
    return c, (cfg.clip.short_source if cfg.clip is not None else "")


def _clip_actions(f: Finding, run: RunData) -> list[str]:
    c, src = _configured_clip(run)
    if isinstance(c, float) and c > 0:
        t = _tighter_clip(f, run)
        if t is not None:
            return [
                _with(
                    f"tighten the clip from {rcfg.num(c)} to {fmt(t)} (p99 of this run's grad norms before "
                    f"step {f.step_start})",
                    "clip",
                    run,
                    value=fmt(t),
                )
            ]
        return [
            f"keep {say('clip', run, value=rcfg.num(c)) or f'the clip at {rcfg.num(c)}'} ({src}): "
            "it is in place; a tighter clip would only hide an LR that is too high"
        ]
    t = trusted_clip(f, run)
    if t is not None and c is None:
        return [
            _with(
                f"clip the global grad norm at {fmt(t)} (p99 of this run's grad norms before step "
                f"{f.step_start}; 1.0 is the usual default)",
                "clip",
                run,
                value=fmt(t),
            )
        ]
    where = " (the run does not clip now)" if c == 0 else ""
    return [
        _with(
            f"clip the global grad norm at 1.0{where}, the HF, Megatron and OLMo default",
            "clip",
            run,
            value="1.0",
        )
    ]


def _beta2_actions(f: Finding, run: RunData) -> list[str]:
    cfg = config_of(run)
    b2, opt = cfg.get("beta2"), str(cfg.get("optimizer") or "").lower()
    if opt and not any(k in opt for k in ("adam", "lamb")):
        return []  # not an Adam-family optimizer: no beta2 to lower
    if isinstance(b2, float) and b2 <= 0.95:
        return []
    if isinstance(b2, float):
        return [_with(f"lower AdamW beta2 from {b2:g} to 0.95", "beta2", run)]
    return [
        _with(
            "set AdamW beta2 to 0.95 if it is higher (the PyTorch and HF default is 0.999)",
            "beta2",
            run,
        )
    ]


def _bf16_actions(f: Finding, run: RunData) -> list[str]:
    prec = config_of(run).get("precision") or run.meta.get("precision")
    if prec in ("bf16", "fp32", "fp8"):
        return []
    if prec is None and f.kind != "fp16-overflow":
        return []  # nothing says the run is fp16: switching to bf16 would be a guess
    return [
        _with("train in bf16 autocast and drop the loss scaler", "bf16", run),
        "if bf16 is unavailable: compute attention softmax and the loss in fp32",
    ]


def _fp32_softmax_actions(f: Finding, run: RunData) -> list[str]:
    prec = config_of(run).get("precision") or run.meta.get("precision")
    if prec == "fp32":
        return []
    return [
        "keep attention softmax, norms and the loss in fp32"
        + (" (--attention-softmax-in-fp32)" if _fw(run) == rcfg.MEGATRON else "")
    ]


def _rewind_actions(f: Finding, run: RunData) -> list[str]:
    start = f.step_start or 0
    back = max(start - 100, 0)
    firsts = [int(x.steps[0]) for x in run.series.values() if len(x)]
    if firsts and back <= min(firsts):
        return []  # "rewind to the start" is a restart: the other changes say with what
    if _fw(run) == rcfg.STABDIAG:
        return [
            f"stabdiag branch RUN --at {back} --skip-batches {start}:{start + 200} (rewind ~100 steps before "
            "the onset and skip the batches that follow)"
        ]
    return [
        f"restart from a checkpoint at or before step {back} (~100 steps before onset)",
        "skip the 200-500 batches that follow that checkpoint, then continue",
    ]


def _steps(n: object) -> str:
    """``1 step`` / ``12 steps`` for a logged count; ``a few steps`` when the finding has none."""
    return words.count(int(n), "step") if isinstance(n, (int, float)) else "a few steps"


def _skip_update_actions(f: Finding, run: RunData) -> list[str]:
    return [
        f"no rewind needed: the loss recovered in {_steps(f.evidence.get('recovery_steps'))}",
        "to absorb such spikes automatically, skip updates whose loss or grad norm is 6 sigma above the last "
        "128 steps (OLMo-core SkipStepAdamW)",
    ]


def _data_actions(f: Finding, run: RunData) -> list[str]:
    return [
        f"inspect the batch(es) at step {f.step_start}: empty sequences, all-masked labels, out-of-range "
        "token ids, a duplicated or corrupt document",
        "use the library's fused cross-entropy instead of log(softmax)",
    ]


def _nan_filter_actions(f: Finding, run: RunData) -> list[str]:
    if _fw(run) != rcfg.HF:
        return []  # an HF TrainingArguments flag: meaningless elsewhere
    loss = run.get(TRAIN_LOSS)
    if loss is not None and not np.all(np.isfinite(loss.values)):
        return []  # the NaN is already in the log
    return [
        "set logging_nan_inf_filter=False so NaN/Inf losses are logged as they happen (HF replaces them "
        "with the running mean by default)"
    ]


def _qk_actions(f: Finding, run: RunData) -> list[str]:
    if config_of(run).get("qk_norm") is True:
        return []
    first = _with("add LayerNorm/RMSNorm on q and k before the dot product", "qk-norm", run)
    return [first, "or QK-clip: rescale Q/K weights when the max logit exceeds tau=100 (alpha=0.5)"]


def _z_actions(f: Finding, run: RunData) -> list[str]:
    if config_of(run).get("z_loss"):
        return []
    return [
        _with("add z-loss 1e-4 * logsumexp(logits)^2 (OLMo 2 uses 1e-5)", "z-loss", run),
        "use decoupled weight decay 0.1 on the output layer",
    ]


def _pre_ln_actions(f: Finding, run: RunData) -> list[str]:
    if config_of(run).get("norm_placement") != "post":
        return []
    return [
        _with("move the LayerNorms in front of attention and MLP (pre-LN)", "pre-ln", run),
        "keep post-LN only with a warm-up, and expect a lower stable LR",
    ]


def _stall_actions(f: Finding, run: RunData) -> list[str]:
    return [
        "check the LR schedule (decayed to ~0 too early?) and that the optimizer steps are not skipped",
        "check labels and data order (a constant or shuffled-away target gives a chance-level loss)",
    ]


def _rank_actions(f: Finding, run: RunData) -> list[str]:
    rank = f.evidence.get("rank")
    who = f"rank {rank}" if rank is not None else "the departing rank"
    return [
        f"rerun the steps from {f.step_start} on other hardware and compare; drain the node of {who} "
        "if the result does not reproduce there",
        "check that every replica loads the same checkpoint and data order (a desynchronised replica)",
    ]


def _jump_actions(f: Finding, run: RunData) -> list[str]:
    return [
        f"check the scheduler around step {f.step_start}: a fresh scheduler on resume or a warm restart "
        "restarts the LR at its peak; restore the scheduler state with the checkpoint"
    ]


def _const(*lines: str) -> Actions:
    return lambda f, run: list(lines)


# --- the table ---------------------------------------------------------------------------------

W_LR = (
    "the loss and grad norm where it broke: no spike there; a loss that falls slower is the price"
)
W_WARM = "grad norm and update ratio during warm-up: the loss should fall smoothly through the end of warm-up"
W_CLIP = "the share of clipped steps: a few percent is right; most steps clipped means the LR is too high"
R_LOWER_LR = Rule(
    "lower-lr",
    "Lower the learning rate",
    "Spikes and explosions at a given LR usually vanish at a smaller one; the cut is keyed to the "
    "worst event (10x for a run that goes non-finite early, 2x otherwise).",
    (LLM_FOUNDRY, TB_DEBUGGER, WORTSMAN),
    _lr_actions(None, "lower the peak LR"),
    change="lr",
    watch=W_LR,
)
R_LOWER_LR_2 = R_LOWER_LR
R_LOWER_LR_10 = R_LOWER_LR
R_CLIP = Rule(
    "clip",
    "Clip the global gradient norm",
    "A clip at the top of the healthy distribution stops one bad batch from moving the weights far.",
    (WORTSMAN, ZCLIP),
    _clip_actions,
    change="clip",
    watch=W_CLIP,
    title_fn=_clip_title,
)
R_ADAPTIVE_CLIP = Rule(
    "adaptive-clip",
    "Use adaptive gradient clipping",
    "Clipping against an EMA of recent grad norms follows the run as its scale changes.",
    (ZCLIP,),
    _const(
        "ZClip with z_thresh 2.5 and alpha 0.97, or skip steps whose loss "
        "or grad norm is 6 sigma above the last 128 (OLMo-core)"
    ),
    change="clip",
    watch=W_CLIP,
)
R_BETA2 = Rule(
    "beta2",
    "Lower AdamW beta2",
    "A shorter second-moment memory reacts before a rare large gradient turns into a huge update.",
    (WORTSMAN, OLMO2),
    _beta2_actions,
    change="beta2",
    watch="spikes after rare large gradients should shrink or vanish",
)
R_SKIP_UPDATE = Rule(
    "skip-spike-updates",
    "Record it; let the optimizer skip such updates",
    "A spike that recovers within a few steps costs little; skipping the update that "
    "caused it costs less.",
    (OLMO2, "allenai/OLMo-core SkipStepAdamW"),
    _skip_update_actions,
    change="recovery",
    watch="whether spikes recur, and whether they grow",
)
R_WARMUP = Rule(
    "warmup",
    "Warm the learning rate up",
    "Early updates at full LR hit the un-adapted Adam state; a warm-up avoids early divergence.",
    (WORTSMAN,),
    _warmup_actions,
    change="warmup",
    watch=W_WARM,
)
R_REWIND = Rule(
    "rewind",
    "Rewind and skip the batches",
    "A spike that does not recover is a data x optimizer-state interaction; replaying from before "
    "it with other data usually passes.",
    (PALM,),
    _rewind_actions,
    change="recovery",
    watch="the loss passes the old onset without the spike; if it spikes again, the data was not the cause",
)
R_BF16 = Rule(
    "bf16",
    "Switch from fp16 to bf16",
    "bf16 has fp32's exponent range, so activations and gradients no longer overflow.",
    (DEEPSPEED_FP16,),
    _bf16_actions,
    change="precision",
    watch="no skipped steps; the loss should match the fp16 run where that one was healthy",
)
R_FP32_SOFTMAX = Rule(
    "fp32-softmax",
    "Compute softmax and loss in fp32",
    "The attention softmax and the log of the loss are where low precision overflows first.",
    (MEGATRON_FP32_SOFTMAX,),
    _fp32_softmax_actions,
    change="fp32-softmax",
    watch="non-finite values should disappear or move later",
)
R_DATA = Rule(
    "check-data",
    "Check the data at the first bad step",
    "NaN at the start is often an empty or fully masked batch (0/0), or log(0) in a custom loss; a "
    "one-step spike is often one odd document.",
    (TB_DEBUGGER,),
    _data_actions,
    change="data",
    watch="the loss of that batch replayed alone",
)
R_NAN_FILTER = Rule(
    "nan-visible",
    "Make NaN steps visible",
    "Logging filters can hide NaN losses; count them instead.",
    (HF_NAN_FILTER,),
    _nan_filter_actions,
    change="nan-visible",
    watch="the logged loss at the steps where the grad norm is non-finite",
)
R_QK_NORM = Rule(
    "qk-norm",
    "Add QK-norm",
    "Normalising queries and keys bounds the attention logits, which otherwise grow without limit.",
    (WORTSMAN, MEGATRON_QKCLIP),
    _qk_actions,
    change="qk-norm",
    watch="the max attention logit stays bounded (tens, not thousands)",
)
R_Z_LOSS = Rule(
    "z-loss",
    "Add z-loss",
    "z-loss pulls log Z of the output softmax towards 0 so output logits cannot drift.",
    (WORTSMAN, OLMO2),
    _z_actions,
    change="z-loss",
    watch="output log Z stays near 0",
)
R_PRE_LN = Rule(
    "pre-ln",
    "Use pre-LN",
    "Post-LN's gradients near the output are large at initialisation; pre-LN trains deep stacks "
    "without a fragile warm-up.",
    (XIONG,),
    _pre_ln_actions,
    change="norm",
    watch="the loss keeps falling past the step where the post-LN run went flat",
)
R_STALL = Rule(
    "unstall",
    "Find out why learning stopped",
    "A loss stuck far above its trend with shrinking gradients means updates no longer move the model.",
    (WORTSMAN,),
    _stall_actions,
    change="unstall",
    watch="the loss resumes falling",
)
R_SCALE_INFO = Rule(
    "scaler-ok",
    "Nothing to do: the loss scaler is searching",
    "Skipped steps while the dynamic loss scale settles are the scaler working as designed.",
    (DEEPSPEED_FP16,),
    _const("no action; watch that the skips stop once the scale settles"),
    change="info",
    watch="skipped steps stop once the scale settles",
)
R_RESTART = Rule(
    "restart-check",
    "Confirm the resume restored all state",
    "A resume that restores weights but not optimizer, scheduler or data position repeats or "
    "skips data and can spike.",
    (PALM,),
    lambda f, run: [
        f"check that optimizer, LR scheduler, loss scaler and data-loader position were "
        f"restored at step {f.step_start}; stabdiag keeps the values written last"
    ],
    change="restart",
    watch="the loss right after the resume continues where it left off",
)
R_RANK = Rule(
    "rank-hardware",
    "Isolate the faulty rank",
    "One replica departing from the others points to hardware or a desynchronised replica, not the model.",
    (MEGATRON_RERUN,),
    _rank_actions,
    change="hardware",
    watch="the rerun on other hardware matches the others",
)
R_WARN_LR_JUMP = Rule(
    "lr-jump",
    "Fix the LR schedule",
    "A sudden LR increase hits the Adam state sized for the old LR.",
    (WORTSMAN,),
    _jump_actions,
    change="schedule",
    watch="the logged LR follows the schedule",
)

RULES: Mapping[str, tuple[Rule, ...]] = {
    "loss-spike": (R_REWIND, R_CLIP, R_LOWER_LR, R_BETA2, R_ADAPTIVE_CLIP),
    "grad-spike": (R_CLIP, R_ADAPTIVE_CLIP, R_BETA2, R_LOWER_LR),
    "grad-explosion": (R_LOWER_LR, R_WARMUP, R_CLIP, R_BETA2),
    "nonfinite": (R_LOWER_LR, R_DATA, R_FP32_SOFTMAX, R_CLIP, R_BF16, R_NAN_FILTER),
    "fp16-overflow": (R_BF16, R_FP32_SOFTMAX, R_LOWER_LR, R_CLIP),
    "divergence": (R_REWIND, R_LOWER_LR, R_WARMUP, R_CLIP, R_Z_LOSS),
    "stall": (R_STALL,),
    "attention-logit-growth": (R_QK_NORM, R_LOWER_LR),
    "output-logit-drift": (R_Z_LOSS,),
    "restart": (R_RESTART,),
    "lr-schedule": (R_WARMUP, R_WARN_LR_JUMP),
    "rank-divergence": (R_RANK,),
}


def _best_checkpoint(f: Finding, run: RunData) -> tuple[int, str] | None:
    """(step, text) of the best checkpoint by the metric the run optimises (HF metric_for_best_model,
    Lightning's monitor), when the config names one and the run logged it."""
    cfg = config_of(run)
    name = cfg.get("metric_for_best_model")
    if not name:
        return None
    bare = (
        str(name)
        .removeprefix("eval_")
        .removeprefix("val_")
        .removeprefix("eval/")
        .removeprefix("val/")
    )
    cands = [str(name), f"eval_{bare}", f"val/{bare}", f"eval/{bare}", f"val_{bare}", bare]
    metric = next((m for m in cands if run.get(m) is not None), None)
    if metric is None:
        return None
    s = run.get(metric).finite  # type: ignore[union-attr]
    if not len(s):
        return None
    gib = cfg.get("greater_is_better")
    if gib is None:
        gib = not any(
            k in bare.lower() for k in ("loss", "wer", "cer", "error", "perplexity", "ppl")
        )
    i = int(np.argmax(s.values) if gib else np.argmin(s.values))
    step, val = int(s.steps[i]), float(s.values[i])
    return step, (
        f"keep the checkpoint at or near step {step}, best by {name} ({fmt(val)}, "
        f"{'higher' if gib else 'lower'} is better), the metric the run selects on "
        f"({cfg.metric_for_best_model.short_source})"
    )  # type: ignore[union-attr]


def _overfit_actions(f: Finding, run: RunData) -> list[str]:
    best = _best_checkpoint(f, run)
    stop = (
        "load_best_model_at_end=True with EarlyStoppingCallback"
        if _fw(run) == rcfg.HF
        else 'EarlyStopping(monitor="val_loss") and ModelCheckpoint(save_top_k=1)'
        if _fw(run) == rcfg.LIGHTNING
        else "stop early there"
    )
    if best is not None:
        first = f"{best[1]}; {stop}"
    else:
        first = (
            f"keep the checkpoint at or near step {f.evidence.get('best_val_step', f.step_start)} "
            f"(best validation loss {fmt(float(f.evidence.get('best_val_loss', float('nan'))))}); {stop}"
        )
    return [
        first,
        "for longer training: more data or augmentation, more weight decay or dropout, fewer epochs",
    ]


R_OVERFIT = Rule(
    "overfitting",
    "Keep the best checkpoint; regularise",
    "Validation loss rising while training loss falls is overfitting, not instability: the "
    "optimizer is fine, the model is memorising.",
    ('Prechelt 1998, "Early Stopping - But When?"',),
    _overfit_actions,
    change="checkpoint",
    watch="the validation metric at the kept checkpoint",
)
R_INJECTED = Rule(
    "injected",
    "Nothing to change in the setup for the injected event",
    "A fault injected on purpose is a test of the setup, not a defect of it.",
    ("stabdiag train --inject (run.json)",),
    lambda f, run: [
        "compare with a run without the injection (or stabdiag branch --skip-batches) to "
        "measure what it cost"
    ],
    change="injected",
    watch="the loss returns to its pre-injection trend",
)

# Info-level overflow findings are the benign scale search: answer with reassurance, not a fix.
INFO_RULES: Mapping[str, tuple[Rule, ...]] = {"fp16-overflow": (R_SCALE_INFO,)}
# A loss spike that recovered is not a reason to rewind (detection.md, section c).
TRANSIENT_SPIKE_RULES = (R_SKIP_UPDATE, R_DATA, R_CLIP, R_BETA2, R_ADAPTIVE_CLIP)
# Diagnosis cause -> rules it adds even when no finding kind lists them (post-LN: pre-LN).
CAUSE_RULES: Mapping[str, tuple[Rule, ...]] = {
    "attention-logit-growth": (R_QK_NORM, R_LOWER_LR, R_WARMUP),
    "deep-post-ln": (R_PRE_LN, R_WARMUP, R_LOWER_LR),
    "lr-too-high": (R_LOWER_LR, R_WARMUP),
    "injected": (R_INJECTED,),
}


def rules_for(f: Finding) -> tuple[Rule, ...]:
    if f.severity is Severity.INFO and f.kind in INFO_RULES:
        return INFO_RULES[f.kind]
    if f.kind == "loss-spike" and f.evidence.get("recovered") is True:
        # an info-level blip that came straight back is per-batch noise: nothing to change for it
        return () if f.severity is Severity.INFO else TRANSIENT_SPIKE_RULES
    if f.kind == "divergence" and f.evidence.get("overfitting") is True:
        return (R_OVERFIT,)
    if f.kind == "lr-schedule" and f.evidence.get("issue") == "lr_jump":
        return (R_WARN_LR_JUMP,)
    if f.kind == "lr-schedule" and f.severity is Severity.INFO:
        return ()  # no warm-up and no trouble followed: nothing to fix
    if f.kind == "lr-schedule" and f.evidence.get("issue") == "no_warmup":
        return (R_WARMUP,)
    return RULES.get(f.kind, ())


def _ref(f: Finding) -> str:
    where = f"@{f.step_start}" if f.step_start is not None else ""
    return f"{f.kind}{where}"


def suggest(
    findings: Sequence[Finding],
    runs: Mapping[str, RunData],
    diagnoses: Mapping[str, Diagnosis] | None = None,
) -> list[Remedy]:
    """Rank remedies per run: at most MAX_PER_RUN, one per kind of change, none the run already makes.

    Order: the kinds of change the run's diagnosis names first (in its order), then worst finding
    first and each kind's own priority. A remedy several findings call for appears once, with its
    actions from the worst of them and every finding in ``addresses``. Findings an injected fault
    explains get no fix of their own."""
    out: list[Remedy] = []
    own: dict[str, list[Finding]] = {}
    for f in findings:  # grouped once: a scan per run is quadratic on 100,000 runs
        own.setdefault(f.run, []).append(f)
    if diagnoses is None:
        diagnoses = diagnose_all(findings, {n: r for n, r in runs.items() if n in own})
    for run_name, mine in own.items():
        run = runs.get(run_name) or RunData(name=run_name, series={})
        diag = diagnoses.get(run_name)
        explained = set(diag.explained) if diag is not None and diag.injected else set()
        ordered = sorted(
            mine,
            key=lambda f: (-f.severity, f.step_start if f.step_start is not None else -1),
        )
        merged: dict[str, dict[str, Any]] = {}
        pairs: list[tuple[Finding, int, Rule]] = []
        for f in ordered:
            if _ref(f) in explained:
                continue
            pairs += [(f, prio, rule) for prio, rule in enumerate(rules_for(f))]
        if diag is not None and diag.cause in CAUSE_RULES and ordered:
            anchor = _cause_anchor(ordered, diag)
            pairs += [(anchor, 10 + i, rule) for i, rule in enumerate(CAUSE_RULES[diag.cause])]
        # One LR cut, keyed to the worst event it answers (a NaN early calls for 10x, a spike for 2x).
        lr_fs = [f for f, _, rule in pairs if rule.kind_of_change == "lr"]
        worst_lr = (
            min(lr_fs, key=lambda f: (_lr_factor(f, run), -int(f.severity), f.step_start or 0))
            if lr_fs
            else None
        )
        for f, prio, rule in pairs:
            key = (-int(f.severity), prio)
            if rule.id in merged:
                entry = merged[rule.id]
                entry["addresses"].append(_ref(f))
                entry["key"] = min(entry["key"], key)
                continue
            if not _fits_cause(rule, f, diag):
                continue
            acts = tuple(
                rule.actions(worst_lr if rule.kind_of_change == "lr" and worst_lr else f, run)
            )
            if not acts:
                continue  # the run already does this (or it does not apply to its framework)
            merged[rule.id] = {
                "rule": rule,
                "finding": f,
                "key": key,
                "addresses": [_ref(f)],
                "actions": acts,
            }
        order = list(diag.changes) if diag is not None else []
        ranked = sorted(
            merged.values(),
            key=lambda e: (
                order.index(e["rule"].kind_of_change)
                if e["rule"].kind_of_change in order
                else len(order),
                e["key"],
            ),
        )
        kept: list[dict[str, Any]] = []
        seen: set[str] = set()
        for e in ranked:
            change = e["rule"].kind_of_change
            if change in seen:
                continue  # one remedy per kind of change: one LR cut, one warm-up, one clip
            seen.add(change)
            kept.append(e)
        for rank, e in enumerate(kept[:MAX_PER_RUN], start=1):
            rule: Rule = e["rule"]
            title = (rule.title_fn(e["finding"], run) if rule.title_fn else None) or rule.title
            out.append(
                Remedy(
                    id=rule.id,
                    kind=e["finding"].kind,
                    run=run_name,
                    rank=rank,
                    title=title,
                    actions=e["actions"],
                    why=rule.why,
                    references=rule.references,
                    addresses=tuple(dict.fromkeys(e["addresses"])),
                    change=rule.kind_of_change,
                    watch=rule.watch,
                )
            )
    return out


# Kinds of change that answer a data or unknown cause only: next to a specific diagnosis
# (attention-logit growth, post-LN, LR too high) "check the batch" and "check the labels" are noise.
_GENERIC_CHANGES = {
    "data": ("bad-batch", "numerics-or-data", "unclear", "healthy"),
    "nan-visible": ("bad-batch", "numerics-or-data", "unclear", "healthy"),
    "unstall": ("stall", "unclear", "healthy"),
}


# Causes that call for no change to the optimizer: a healthy run keeps only reassurance and
# bookkeeping; an outlier batch or an injected fault is not answered with an LR cut.
_NO_LR_CUT = frozenset(
    {"healthy", "grad-outliers", "bad-batch", "injected", "overfitting", "early-transient"}
)
# Causes whose answer is a short list: an early transient that recovered needs no optimizer change.
_ONLY = {"early-transient": frozenset({"recovery", "info", "restart"})}
_HEALTHY_KEEPS = frozenset({"info", "restart", "checkpoint"})


def _fits_cause(rule: Rule, f: Finding, diag: Diagnosis | None) -> bool:
    if (
        diag is not None
        and diag.cause == "healthy"
        and rule.kind_of_change not in _HEALTHY_KEEPS
        and not rule.id.startswith("rl-")
    ):
        return False
    if diag is not None and diag.cause in _NO_LR_CUT and rule.kind_of_change == "lr":
        return False
    if diag is not None and diag.cause in _ONLY and rule.kind_of_change not in _ONLY[diag.cause]:
        return False
    causes = _GENERIC_CHANGES.get(rule.kind_of_change)
    if causes is None or diag is None:
        return True
    return diag.cause in causes or _ref(f) not in set(diag.explained)


def _cause_anchor(ordered: Sequence[Finding], diag: Diagnosis) -> Finding:
    """The finding a cause-level remedy is keyed to: the earliest of those the diagnosis explains."""
    mine = [f for f in ordered if _ref(f) in set(diag.explained)] or list(ordered)
    return min(
        mine, key=lambda f: (f.step_start if f.step_start is not None else 0, -int(f.severity))
    )


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
TRL_GRPO_DOCS = (
    "TRL GRPOConfig docs (beta, epsilon_high, num_generations, mask_truncated_completions)"
)
VERL_DOCS = "verl config docs (kl_loss_coef, entropy_coeff, clip_ratio_high, rollout correction)"
YAO_TIS = "Yao et al. 2025, Your Efficient RL Framework Secretly Brings You Off-Policy RL Training"
PPO_DETAILS = "Huang et al. 2022, The 37 Implementation Details of PPO (ICLR blog track)"


def _rl_lr(factor: float) -> Actions:
    return _lr_actions(factor, f"lower the policy LR {1 / factor:g}x")


def _rl_kl_actions(f: Finding, run: RunData) -> list[str]:
    return [
        *_rl_lr(0.2)(f, run),
        "raise the KL coefficient: TRL `beta` (0.04 as in DeepSeekMath if it is 0 or below; 2x if not), "
        "verl `actor_rollout_ref.actor.kl_loss_coef` (e.g. 0.001 -> 0.01) with `use_kl_loss=True`",
        "read a few completions from the steps after the onset: a reward that is being gamed shows there",
    ]


def _rl_entropy_actions(f: Finding, run: RunData) -> list[str]:
    at = f.evidence.get("collapse_step") or f.evidence.get("projected_floor_step")
    keep = f" (keep a checkpoint from before step {at})" if at else ""
    return [
        "widen the upper clip so rare tokens can still grow: TRL `epsilon_high=0.28`, verl "
        "`actor_rollout_ref.actor.clip_ratio_high=0.28` (DAPO clip-higher)",
        "add an entropy bonus or a KL anchor: verl `actor_rollout_ref.actor.entropy_coeff=0.001`; TRL `beta=0.04` "
        "if it is 0",
        f"sample with more diversity (temperature 1.0 or above) and lower the LR{keep}",
    ]


def _rl_length_actions(f: Finding, run: RunData) -> list[str]:
    cap = f.evidence.get("cap")
    capt = f" of {fmt(float(cap))} tokens" if isinstance(cap, int | float) else ""
    return [
        "stop rewarding truncated answers: TRL `mask_truncated_completions=True`; verl: filter or penalise "
        f"overlong responses (DAPO overlong reward shaping) at the cap{capt}",
        "make the reward length-neutral: score correctness, not volume; add a length penalty "
        'or normalise per-token rewards (TRL `loss_type="dr_grpo"` removes GRPO\'s length bias)',
        "inspect the longest completions of late steps for padding, repetition or keyword stuffing",
    ]


def _rl_truncation_actions(f: Finding, run: RunData) -> list[str]:
    cap = f.evidence.get("cap")
    capt = fmt(float(cap)) if isinstance(cap, int | float) else "the current cap"
    return [
        f"raise TRL `max_completion_length` / verl `data.max_response_length` above {capt} if answers need it, "
        "or set TRL `mask_truncated_completions=True` so cut answers do not count"
    ]


def _rl_zero_actions(f: Finding, run: RunData) -> list[str]:
    verdict = f.evidence.get("pass")
    if verdict == "none":
        return [
            "check the grader on a handful of hand-written right answers: a broken verifier pays nothing",
            "use easier prompts or an SFT warm start until some completions earn the reward; raise TRL "
            "`num_generations` (e.g. 8 -> 16) so rare successes appear in a group",
        ]
    if verdict == "all":
        return [
            "use harder prompts: drop the ones every completion already solves (DAPO dynamic sampling; verl "
            "`algorithm.filter_groups.enable=True`)"
        ]
    return [
        "drop groups whose rewards are all equal and sample more (DAPO dynamic sampling; verl "
        "`algorithm.filter_groups.enable=True`); raise TRL `num_generations`",
        "check whether the equal rewards are all passes (too easy) or all failures (too hard or a broken grader)",
    ]


def _rl_clip_actions(f: Finding, run: RunData) -> list[str]:
    return [
        *_rl_lr(0.5)(f, run),
        "fewer updates per batch: TRL `num_iterations` (1 is on-policy), verl `actor_rollout_ref.actor.ppo_epochs`",
        "if the upper side saturates: TRL `epsilon_high=0.28` / verl `clip_ratio_high=0.28` (DAPO)",
    ]


def _rl_logprob_actions(f: Finding, run: RunData) -> list[str]:
    return [
        "keep importance-sampling correction on: TRL `vllm_importance_sampling_correction=True` (truncation at "
        "`vllm_importance_sampling_clip_max`, 3.0); verl `algorithm.rollout_correction` with token-level IS",
        "compute the LM head / log-softmax in fp32 on both sides and check that weights are synced to the engine "
        "every step",
        "compare one batch's log-probs from engine and trainer by hand to find the layer that differs",
    ]


def _rl_value_actions(f: Finding, run: RunData) -> list[str]:
    return [
        "lower the critic LR (verl `critic.optim.lr`) and warm the critic up before the policy moves "
        "(verl `trainer.critic_warmup`)",
        "clip the value update (TRL PPO `cliprange_value`, verl `critic.cliprange_value`) and whiten rewards",
        "or drop the critic: GRPO/RLOO estimate advantages from groups",
    ]


def _rl_pref_actions(f: Finding, run: RunData) -> list[str]:
    best = f.evidence.get("best_step", f.step_start)
    return [
        f"keep the checkpoint at or near step {best} (best held-out preference loss) and stop there",
        "fewer epochs or more preference pairs; a larger DPO `beta` (0.1 -> 0.3) keeps the policy nearer the "
        "reference",
        'or a loss that bounds the margin: TRL DPOConfig `loss_type="ipo"`',
    ]


R_RL_KL = Rule(
    "rl-kl",
    "Hold the policy near its reference",
    "A KL that grows without reward gain is the policy "
    "moving for nothing; a smaller step and a stronger KL anchor stop it.",
    (DEEPSEEKMATH, TRL_GRPO_DOCS, VERL_DOCS),
    _rl_kl_actions,
)
R_RL_ENTROPY = Rule(
    "rl-entropy",
    "Keep exploration alive",
    "Reward gains come from spending entropy; once it is "
    "gone the policy stops finding better answers.",
    (CUI_ENTROPY, DAPO, VERL_DOCS),
    _rl_entropy_actions,
)
R_RL_LENGTH = Rule(
    "rl-length",
    "Stop paying for length",
    "A reward that grows with length is gamed by running to the cap.",
    (DAPO, TRL_GRPO_DOCS),
    _rl_length_actions,
)
R_RL_TRUNC = Rule(
    "rl-truncation",
    "Let answers finish, or do not count cut ones",
    "Truncated completions have no ending for the reward to judge.",
    (TRL_GRPO_DOCS, DAPO),
    _rl_truncation_actions,
)
R_RL_ZERO = Rule(
    "rl-zero-signal",
    "Give the groups something to compare",
    "With equal rewards in a group every advantage is 0: the compute teaches nothing.",
    (DAPO, DEEPSEEKMATH),
    _rl_zero_actions,
)
R_RL_CLIP = Rule(
    "rl-clip",
    "Take smaller policy steps",
    "Tokens at the clip give no gradient; many of them mean the update outran its data.",
    (DAPO, PPO_DETAILS),
    _rl_clip_actions,
)
R_RL_LOGPROB = Rule(
    "rl-logprob",
    "Align the trainer with the inference engine",
    "Samples from a policy other than the trained one make every update silently off-policy.",
    (YAO_TIS, TRL_GRPO_DOCS, VERL_DOCS),
    _rl_logprob_actions,
)
R_RL_VALUE = Rule(
    "rl-value",
    "Stabilise the critic",
    "A critic worse than the mean adds noise to every advantage.",
    (PPO_DETAILS, VERL_DOCS),
    _rl_value_actions,
)
R_RL_PREF = Rule(
    "rl-pref-overfit",
    "Stop at the best held-out preference loss",
    "Past full train accuracy DPO only widens margins, which does not transfer.",
    (IPO, "TRL DPOTrainer docs"),
    _rl_pref_actions,
)
R_RL_NONFINITE = Rule(
    "rl-nonfinite",
    "Find where the non-finite value comes from",
    "A NaN/Inf reward or KL "
    "poisons advantages or the KL term; RL trainers often hide it from the loss.",
    (HF_NAN_FILTER,),
    lambda f, run: _rl_nonfinite_actions(f, run),
)


def _rl_nonfinite_actions(f: Finding, run: RunData) -> list[str]:
    if f.metric.startswith(("rl/reward", "rl/score", "rl/rewards/")):
        first = (
            f"call the reward functions on the completions of step {f.step_start} and clip or reject "
            "non-finite rewards (a +inf reward zeroes its group's advantages; a NaN poisons them)"
        )
    else:
        first = (
            f"{f.metric} went non-finite at step {f.step_start}: look for -inf log-probs (a token the "
            "reference or the engine gives probability 0) and for empty or fully masked completions"
        )
    return [first, "set logging_nan_inf_filter=False to see NaN losses as they happen"]


RULES = {
    **RULES,
    "rl-kl-blowup": (R_RL_KL,),
    "rl-entropy-collapse": (R_RL_ENTROPY,),
    "rl-length-hacking": (R_RL_LENGTH,),
    "rl-zero-signal": (R_RL_ZERO,),
    "rl-clip-saturation": (R_RL_CLIP,),
    "rl-logprob-mismatch": (R_RL_LOGPROB,),
    "rl-value-divergence": (R_RL_VALUE,),
    "rl-preference-overfit": (R_RL_PREF,),
    "rl-nonfinite": (R_RL_NONFINITE,),
}
INFO_RULES = {**INFO_RULES, "rl-length-hacking": (R_RL_TRUNC,)}
