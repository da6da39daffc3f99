"""RunConfig: what a run was configured to do, each setting with the file it was read from.

Remedies must never advise what a run already does ("clip at 1.0" to a run that clips at 1.0)
and must phrase a change in the run's own framework (HF ``max_grad_norm=``, Lightning
``gradient_clip_val=``, Megatron ``--clip-grad``). Both need the run's configuration, which lies
beside its logs under many spellings: ``learning_rate``/``lr``/``optimizer.params.lr``,
``max_grad_norm``/``clip_grad``/``gradient_clipping``. This module owns the one alias table that
maps those spellings to canonical fields (as ``sources/aliases.py`` does for metrics) and the
frozen ``RunConfig`` built from them. The files themselves are read in ``sources/configs.py``.

A layer is one file's flat ``{dotted.key: value}``; layers are given most specific first and the
first layer that sets a field wins, so a run's own ``config.json`` beats a generic guess.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

# Frameworks a remedy can be phrased for.
HF, LIGHTNING, MEGATRON, DEEPSPEED, STABDIAG = (
    "hf",
    "lightning",
    "megatron",
    "deepspeed",
    "stabdiag",
)
FRAMEWORK_NAMES = {
    HF: "HF Trainer",
    LIGHTNING: "Lightning",
    MEGATRON: "Megatron-LM",
    DEEPSPEED: "DeepSpeed",
    STABDIAG: "stabdiag train",
}


@dataclass(frozen=True)
class Setting:
    """One configured value and where it came from ("config.json: grad_clip")."""

    value: Any
    source: str

    @property
    def short_source(self) -> str:
        """The source with directories dropped ("config.json: steps"), for sentences."""
        return re.sub(r"[^\s:()]*/([^/\s:()]+)", r"\1", self.source)

    def to_dict(self) -> dict[str, Any]:
        v = self.value
        return {"value": list(v) if isinstance(v, tuple) else v, "source": self.source}


@dataclass(frozen=True)
class RunConfig:
    """The run's configuration as far as its files tell; ``None`` = not found (never guessed)."""

    framework: Setting | None = None
    lr: Setting | None = None  # peak LR
    schedule: Setting | None = None  # constant, cosine, linear, ... (lower case)
    min_lr: Setting | None = None
    warmup_steps: Setting | None = None  # in optimizer steps (derived from a ratio when needed)
    warmup_ratio: Setting | None = None
    warmup_other: Setting | None = (
        None  # warm-up counted in tokens or samples (Megatron), e.g. "3.75e+08 tokens"
    )
    total_steps: Setting | None = None
    clip: Setting | None = None  # global grad-norm clip; 0.0 = no clipping
    optimizer: Setting | None = None
    beta1: Setting | None = None
    beta2: Setting | None = None
    eps: Setting | None = None
    weight_decay: Setting | None = None
    precision: Setting | None = None  # fp32, fp16, bf16, fp8
    loss_scale: Setting | None = None  # initial (dynamic) or static loss scale
    batch_size: Setting | None = None
    grad_accum: Setting | None = None
    seq_len: Setting | None = None
    n_layer: Setting | None = None
    d_model: Setting | None = None
    n_head: Setting | None = None
    vocab_size: Setting | None = None
    norm_placement: Setting | None = None  # pre / post
    qk_norm: Setting | None = None
    z_loss: Setting | None = None
    metric_for_best_model: Setting | None = None
    greater_is_better: Setting | None = None
    injected: Setting | None = None  # stabdiag train's injected faults (tuple of dicts)

    def get(self, name: str) -> Any:  # noqa: ANN401 - the setting's own type
        s = getattr(self, name, None)
        return None if s is None else s.value

    @property
    def fw(self) -> str:
        """The framework slug ("" when unknown)."""
        return str(self.get("framework") or "")

    def settings(self) -> dict[str, Setting]:
        return {k: s for k in _NAMES if (s := getattr(self, k)) is not None}

    def __bool__(self) -> bool:
        # Asked for every run a report prints (config_line), config or none: no dict built.
        return any(getattr(self, k) is not None for k in _NOT_FRAMEWORK)

    def to_dict(self) -> dict[str, Any]:
        return {k: s.to_dict() for k, s in self.settings().items()}

    def line(self) -> str:
        """One line a person reads: "LR 0.03 constant, no warm-up, clip 1.0, AdamW β2 0.95, bf16"."""
        g = self.get
        parts: list[str] = []
        if g("lr") is not None:
            parts.append(f"LR {num(g('lr'))}" + (f" {g('schedule')}" if g("schedule") else ""))
        w = g("warmup_steps")
        if g("warmup_other"):
            parts.append(f"warm-up {g('warmup_other')}")
        elif w is not None:
            parts.append("no warm-up" if w == 0 else f"warm-up {w} steps")
        elif g("warmup_ratio") is not None:
            r = g("warmup_ratio")
            parts.append("no warm-up" if r == 0 else f"warm-up {r:g} of the steps")
        c = g("clip")
        if c is not None:
            parts.append("no clipping" if c == 0 else f"clip {num(c)}")
        opt = g("optimizer")
        b2 = g("beta2")
        if opt or b2 is not None:
            parts.append(
                " ".join(
                    x
                    for x in (
                        display_optimizer(opt) if opt else "",
                        f"β2 {b2:g}" if b2 is not None else "",
                    )
                    if x
                )
            )
        if g("weight_decay") is not None:
            parts.append(f"wd {num(g('weight_decay'))}")
        if g("precision"):
            parts.append(str(g("precision")))
        arch = []
        if g("n_layer") is not None:
            arch.append(f"{g('n_layer')} layers")
        if g("d_model") is not None:
            arch.append(f"width {g('d_model')}")
        if g("norm_placement"):
            arch.append(f"{g('norm_placement')}-LN")
        if g("qk_norm") is not None:
            arch.append("QK-norm" if g("qk_norm") else "no QK-norm")
        if arch:
            parts.append(" ".join(arch))
        if g("batch_size") is not None:
            parts.append(f"batch {g('batch_size')}")
        return ", ".join(parts)


_NAMES = tuple(f.name for f in fields(RunConfig))
"""RunConfig's fields in order, looked up once rather than per call."""
_NOT_FRAMEWORK = tuple(k for k in _NAMES if k != "framework")


def num(x: float) -> str:
    """A configured number as a person writes it: 0.03, 3e-4, 1."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return str(x)
    if x == 0 or not math.isfinite(x):
        return str(x)
    return f"{x:.3g}" if 1e-3 <= abs(x) < 1e5 else f"{x:.2g}"


def display_optimizer(name: str) -> str:
    n = str(name).lower()
    for key, shown in (
        ("adamw", "AdamW"),
        ("adafactor", "Adafactor"),
        ("adam", "Adam"),
        ("lion", "Lion"),
        ("sgd", "SGD"),
        ("muon", "Muon"),
        ("lamb", "LAMB"),
        ("sophia", "Sophia"),
    ):
        if key in n:
            return shown
    return str(name)


# --------------------------------------------------------------------------- the alias table
# canonical field -> spellings (lower case, "-" as "_"), matched against the full dotted key and
# its last part. Earlier spellings win within one layer. Kept to keys whose meaning is not in
# doubt: "decay" or "dtype" alone mean different things in different codebases.
KEYS: Mapping[str, tuple[str, ...]] = {
    "lr": (
        "learning_rate",
        "lr",
        "max_lr",
        "peak_lr",
        "base_lr",
        "optimizer.params.lr",
        "opt_learning_rate",
        "optimizer.lr",
        "optim.lr",
        "optimizer_params.lr",
        "lr0",
        "init_lr",
    ),
    "schedule": (
        "lr_scheduler_type",
        "lr_decay_style",
        "lr_schedule",
        "lr_scheduler",
        "scheduler_name",
        "scheduler.type",
        "schedule",
        "decay_style",
    ),
    "min_lr": ("min_lr", "lr_min", "min_learning_rate", "end_lr", "final_lr"),
    "warmup_steps": (
        "warmup_steps",
        "warmup_iters",
        "lr_warmup_iters",
        "num_warmup_steps",
        "lr_warmup_steps",
        "warmup_num_steps",
        "scheduler.params.warmup_num_steps",
        "scheduler_params.warmup_num_steps",
        "warmup",
    ),
    "warmup_ratio": (
        "warmup_ratio",
        "lr_warmup_fraction",
        "warmup_fraction",
        "warmup_frac",
        "pct_start",
    ),
    "total_steps": (
        "max_steps",
        "train_iters",
        "max_iters",
        "total_steps",
        "num_training_steps",
        "total_iters",
        "scheduler.params.total_num_steps",
        "steps",
    ),
    "clip": (
        "max_grad_norm",
        "grad_clip",
        "clip_grad",
        "gradient_clipping",
        "gradient_clip_val",
        "clip_grad_norm",
        "grad_clip_norm",
        "clip_norm",
        "grad_norm_clip",
        "opt_clipnorm",
        "clipnorm",
    ),
    "optimizer": (
        "optim",
        "optimizer_name",
        "optimizer.type",
        "optimizer_type",
        "optimizer.name",
        "optimizer",
        "opt_name",
        "optimizer.method",
        "opt",
    ),
    "beta1": (
        "adam_beta1",
        "beta1",
        "optimizer.params.betas.0",
        "optimizer_params.betas.0",
        "betas.0",
    ),
    "beta2": (
        "adam_beta2",
        "beta2",
        "optimizer.params.betas.1",
        "optimizer_params.betas.1",
        "betas.1",
    ),
    "eps": ("adam_epsilon", "adam_eps", "eps", "optimizer.params.eps"),
    "weight_decay": ("weight_decay", "wd", "optimizer.params.weight_decay", "opt_weight_decay"),
    "precision": (
        "precision",
        "mixed_precision",
        "amp_dtype",
        "fp16",
        "bf16",
        "fp16_enabled",
        "bfloat16_enabled",
        "fp16.enabled",
        "bf16.enabled",
        "half",
    ),
    "loss_scale": (
        "loss_scale",
        "initial_loss_scale",
        "loss_scale_init",
        "initial_dynamic_scale",
        "fp16.initial_scale_power",
    ),
    "batch_size": (
        "global_batch_size",
        "train_batch_size",
        "per_device_train_batch_size",
        "batch_size",
        "micro_batch_size",
        "train_micro_batch_size_per_gpu",
        "bs",
        "optimizer.bs",
    ),
    "grad_accum": (
        "gradient_accumulation_steps",
        "grad_accum",
        "accumulate_grad_batches",
        "grad_accum_steps",
    ),
    "seq_len": (
        "seq_length",
        "max_seq_length",
        "block_size",
        "context_length",
        "max_seq_len",
        "seq_len",
        "max_length",
        "n_ctx",
        "n_positions",
    ),
    "n_layer": (
        "num_hidden_layers",
        "num_layers",
        "n_layer",
        "n_layers",
        "depth",
        "encoder_layers",
    ),
    "d_model": ("hidden_size", "n_embd", "d_model", "dim", "hidden_dim", "emb_dim"),
    "n_head": ("num_attention_heads", "n_head", "num_heads", "n_heads"),
    "vocab_size": ("padded_vocab_size", "vocab_size", "n_vocab"),
    "norm_placement": (
        "norm_placement",
        "apply_residual_connection_post_layernorm",
        "post_layernorm",
        "pre_layernorm",
        "norm_first",
        "pre_norm",
    ),
    "qk_norm": ("qk_norm", "qk_layernorm", "qk_ln", "use_qk_norm", "qk_layer_norm"),
    "z_loss": ("z_loss", "z_loss_weight", "z_loss_coef"),
    "metric_for_best_model": ("metric_for_best_model", "monitor"),
    "greater_is_better": ("greater_is_better",),
}

_FLOAT = {
    "lr",
    "min_lr",
    "warmup_ratio",
    "clip",
    "beta1",
    "beta2",
    "eps",
    "weight_decay",
    "z_loss",
    "loss_scale",
}
_INT = {
    "warmup_steps",
    "total_steps",
    "batch_size",
    "grad_accum",
    "seq_len",
    "n_layer",
    "d_model",
    "n_head",
    "vocab_size",
}
_BOOL = {"qk_norm", "greater_is_better"}
_ABSENT = {"", "none", "null", "nan", "n/a", "auto"}

_NORM = re.compile(r"[-\s]+")


def norm_key(key: str) -> str:
    return _NORM.sub("_", key.strip().lower())


def flatten(d: Mapping[str, Any], prefix: str = "", depth: int = 0) -> dict[str, Any]:
    """{"optimizer": {"params": {"lr": 1}}} -> {"optimizer.params.lr": 1}; lists of scalars as
    ``key.0``, ``key.1`` (betas) and as the whole tuple. Bounded depth: metadata, not data."""
    out: dict[str, Any] = {}
    if depth > 6:
        return out
    for k, v in d.items():
        key = f"{prefix}{norm_key(str(k))}"
        if isinstance(v, Mapping):
            # W&B config.yaml wraps every value as {"desc": ..., "value": ...}
            if set(v) <= {"desc", "value"} and "value" in v:
                v = v["value"]
                if not isinstance(v, Mapping):
                    out[key] = v
                    continue
            out.update(flatten(v, key + ".", depth + 1))
        elif (
            isinstance(v, list | tuple)
            and len(v) <= 8
            and all(isinstance(x, int | float | str | bool) or x is None for x in v)
        ):
            out[key] = tuple(v)
            for i, x in enumerate(v):
                out[f"{key}.{i}"] = x
        else:
            out[key] = v
    return out


def _scalar(v: Any) -> Any:  # noqa: ANN401 - a config value
    """Strings as written in text dumps ("0.03", "True", "None") to Python values."""
    if isinstance(v, str):
        s = v.strip().strip("'\"")
        low = s.lower()
        if low in _ABSENT:
            return None
        if low in ("true", "false"):
            return low == "true"
        try:
            return int(s)
        except ValueError:
            pass
        try:
            return float(s)
        except ValueError:
            return s
    return v


def _precision(key: str, v: Any) -> str | None:  # noqa: ANN401
    leaf = key.rsplit(".", 1)[-1]
    if isinstance(
        v, bool
    ):  # fp16: True / bf16: True / fp16.enabled / bfloat16_enabled / half / amp
        if not v:
            return None  # a False flag alone says only what the run is not (see _precision_off)
        if "bf" in key or "bfloat" in key:
            return "bf16"
        return "fp16" if leaf in ("fp16", "fp16_enabled", "enabled", "half") else None
    s = str(v).strip().lower()
    if not s or s in _ABSENT:
        return None
    if "bf16" in s or "bfloat16" in s:
        return "bf16"
    if "fp8" in s or "float8" in s:
        return "fp8"
    if (
        s in ("16", "16-mixed", "fp16", "float16", "half", "amp", "16-true", "fp16-mixed")
        or "fp16" in s
    ):
        return "fp16"
    if s in ("32", "32-true", "fp32", "float32", "no", "full", "64", "64-true", "float64", "fp64"):
        return "fp32"
    return None


def normalise(name: str, key: str, v: Any) -> Any:  # noqa: ANN401
    """The canonical value of field ``name`` read as ``key``, or None when it says nothing."""
    v = _scalar(v)
    if v is None:
        return None
    if name == "precision":
        return _precision(key, v)
    if name == "norm_placement":
        if isinstance(v, str):
            s = v.lower()
            return "post" if "post" in s else "pre" if "pre" in s else None
        if isinstance(v, bool):
            post_key = "post" in key
            return ("post" if v else "pre") if post_key else ("pre" if v else "post")
        return None
    if name == "loss_scale" and key.endswith("initial_scale_power") and isinstance(v, int | float):
        return float(2 ** int(v)) if 0 <= v < 64 else None
    if name == "loss_scale" and v == 0:
        return None  # 0 = dynamic (DeepSpeed, Megatron): no static scale configured
    if name in _BOOL:
        return v if isinstance(v, bool) else (bool(v) if isinstance(v, int | float) else None)
    if name in _FLOAT or name in _INT:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return None
        if name in _INT:
            if v != int(v) or v < 0 or (v == 0 and name not in ("warmup_steps",)):
                return None  # HF max_steps=-1 means "not set"; 0 layers is not a model
            return int(v)
        if v < 0:
            return None
        if name == "warmup_ratio" and v >= 1:
            return None  # a step count under a ratio key
        return float(v)
    if name in ("schedule", "optimizer", "metric_for_best_model"):
        if isinstance(v, str) and 0 < len(v) <= 80:
            s = v.strip()
            if name == "schedule":
                s = s.lower().removeprefix("schedulertype.")
            return s
        return None
    return v


def _match(layer: Mapping[str, Any], spellings: Sequence[str]) -> tuple[str, Any] | None:
    """The first (key, value) of ``layer`` a spelling names: the full dotted key first, then the
    last part of a dotted key."""
    for sp in spellings:
        if sp in layer:
            return sp, layer[sp]
    for sp in spellings:
        if "." in sp:
            continue
        for k, v in layer.items():
            if k.rsplit(".", 1)[-1] == sp and not k.rsplit(".", 1)[-1].isdigit():
                return k, v
    return None


def build(
    layers: Iterable[tuple[str, Mapping[str, Any]]],
    *,
    framework: str = "",
    framework_source: str = "",
    extra: Mapping[str, Setting] | None = None,
) -> RunConfig:
    """RunConfig from ``(source label, flat layer)`` pairs, most specific first.

    Derived fields say so in their source: warm-up steps from a ratio times the total steps,
    precision "fp32" when a layer states both fp16 and bf16 off."""
    got: dict[str, Setting] = dict(extra or {})
    layers = list(layers)
    for label, layer in layers:
        flat = {norm_key(k): v for k, v in layer.items()}
        for name, spellings in KEYS.items():
            if name in got:
                continue
            for sp in spellings:  # first spelling with a usable value wins
                hit = _match(flat, (sp,))
                if hit is None:
                    continue
                value = normalise(name, *hit)
                if value is not None:
                    got[name] = Setting(value, f"{label}: {hit[0]}")
                    break
        if "precision" not in got and _precision_off(flat):
            got["precision"] = Setting("fp32", f"{label}: fp16/bf16 off")
    if "warmup_steps" not in got and "warmup_ratio" in got and "total_steps" in got:
        n = int(round(got["warmup_ratio"].value * got["total_steps"].value))
        got["warmup_steps"] = Setting(
            n, f"{got['warmup_ratio'].source} x {got['total_steps'].source}"
        )
    if (
        (w := got.get("warmup_steps")) is not None
        and w.value == 0
        and got.get("warmup_ratio") is not None
        and got["warmup_ratio"].value > 0
    ):
        # HF and Megatron: a non-zero ratio applies when the step count is 0
        r = got["warmup_ratio"]
        total = got.get("total_steps")
        got["warmup_steps"] = (
            Setting(int(round(r.value * total.value)), f"{r.source} x {total.source}")
            if total is not None
            else None
        )  # type: ignore[assignment]
        if got["warmup_steps"] is None:
            del got["warmup_steps"]
    _warmup_in_other_units(layers, got)
    if framework:
        got["framework"] = Setting(framework, framework_source or "the log format")
    return RunConfig(**got)


_OTHER_WARMUP = (
    ("lr_warmup_tokens", "tokens"),
    ("lr_warmup_samples", "samples"),
    ("warmup_tokens", "tokens"),
    ("warmup_samples", "samples"),
)


def _warmup_in_other_units(
    layers: Sequence[tuple[str, Mapping[str, Any]]], got: dict[str, Setting]
) -> None:
    """Megatron can warm up over tokens or samples with ``lr_warmup_iters 0``: that is a warm-up."""
    for label, layer in layers:
        for key, unit in _OTHER_WARMUP:
            v = _scalar(layer.get(key))
            if isinstance(v, int | float) and not isinstance(v, bool) and v > 0:
                got["warmup_other"] = Setting(f"{num(float(v))} {unit}", f"{label}: {key}")
                if (w := got.get("warmup_steps")) is not None and w.value == 0:
                    del got["warmup_steps"]
                return


def _precision_off(flat: Mapping[str, Any]) -> bool:
    """Both half-precision flags present and False (HF fp16=False bf16=False, Megatron's args)."""
    pairs = (
        ("fp16", "bf16"),
        ("fp16_enabled", "bfloat16_enabled"),
        ("fp16.enabled", "bf16.enabled"),
    )
    return any(_scalar(flat.get(a)) is False and _scalar(flat.get(b)) is False for a, b in pairs)
