"""Training configuration: one flat frozen dataclass, presets, stabilizer recipes and `resolve`.

Flat on purpose: every field is one `key=value` override on the command line and one key in a
TOML file, and the run's `config.json` is this dataclass as a dict. This module must not import
torch: the CLI imports it to build its options on machines without the `train` extra.

Resolution order (later wins): field defaults -> preset -> recipe -> config file -> overrides.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from stabdiag import words
from stabdiag.errors import TrainError

Norm = Literal["layernorm", "rmsnorm"]
Placement = Literal["pre", "post", "none"]
Decay = Literal["constant", "cosine", "linear"]
Precision = Literal["fp32", "bf16", "fp16"]
Device = Literal["auto", "cpu", "cuda"]
Guard = Literal["off", "warn", "stop", "skip"]
GuardLevel = Literal["info", "warning", "error"]


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything one training run depends on. Fields are documented by the string under them."""

    # --- model (nanoGPT-shaped decoder, byte-level vocabulary) ---
    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    block_size: int = 64
    """Context length in bytes."""
    vocab_size: int = 256
    """Byte-level: every byte is a token, so no tokenizer and no download."""
    tie_embeddings: bool = True
    dropout: float = 0.0
    bias: bool = False

    # --- normalization and other stabilizers ---
    norm: Norm = "layernorm"
    norm_placement: Placement = "pre"
    """pre-LN (GPT-2), post-LN (original Transformer; less stable without warmup,
    Xiong et al. 2020, arXiv 2002.04745) or none."""
    output_norms: bool = False
    """Extra norms on the attention and MLP outputs (Rybakov et al. 2024, arXiv 2410.16682)."""
    qk_norm: bool = False
    """Normalize q and k per head before the dot product (Wortsman et al. 2023, arXiv 2309.14322)."""
    softmax_cap: float = 0.0
    """Attention logit soft-capping cap*tanh(z/cap); 0 = off (Gemma 2 uses 50)."""
    z_loss: float = 0.0
    """Coefficient of z-loss = coef * mean(logZ^2); PaLM and Wortsman use 1e-4."""
    init_std: float = 0.02
    scaled_residual_init: bool = True
    """Scale output projections' init by 1/sqrt(2*n_layer) (GPT-2)."""
    scaled_embed: bool = False
    """Multiply token embeddings by sqrt(n_embd) (Takase et al. 2023, arXiv 2312.16903)."""

    # --- optimizer and schedule ---
    lr: float = 3e-3
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    decay_embeddings: bool = False
    """Norm gains and biases are never decayed; embeddings only if this is true."""
    warmup_steps: int = 20
    decay: Decay = "cosine"
    min_lr: float = 3e-4
    grad_clip: float = 1.0
    """Clip the global grad norm to this value; 0 = off."""
    seq_warmup_steps: int = 0
    """Grow the sequence length linearly from 8 to block_size over this many steps
    (Li, Zhang, He 2022, arXiv 2108.06084); 0 = off."""

    # --- run ---
    precision: Precision = "fp32"
    loss_scale_init: float = 65536.0
    """fp16 only: the dynamic loss scaler's initial scale (torch's default, 2**16)."""
    loss_scale_growth_interval: int = 2000
    """fp16 only: double the scale after this many overflow-free steps (torch's default)."""
    steps: int = 200
    batch_size: int = 16
    eval_interval: int = 50
    eval_batches: int = 4
    log_interval: int = 10
    """Steps between host syncs; metrics are still recorded for every step."""
    checkpoint_interval: int = 0
    """Steps between checkpoints; 0 = only at the end (and on Ctrl-C)."""
    keep_checkpoints: int = 3
    """Step checkpoints kept (newest first; 0 = all). The last one before the first
    warning-or-worse finding seen while training is always kept as well, so `stabdiag branch`
    can rewind to the last healthy state."""
    skip_batches: tuple[str, ...] = ()
    """Data batches never trained on, as 'A:B' ranges of batch indices (inclusive): from step A
    on, step S trains on a later batch. Batch indices are steps unless an earlier range was
    skipped. `stabdiag branch --skip-batches` sets this."""
    threads: int = 0
    """CPU threads for this process; 0 = choose: one per ~400k parameters, at most the cores
    this rank may use (cores / local ranks) and never more than torch's current setting (so
    OMP_NUM_THREADS or a caller's torch.set_num_threads caps it). The `tiny` preset gets 1."""
    seed: int = 0
    device: Device = "auto"
    data: str = "stdlib"
    """'stdlib' (this interpreter's standard library source), 'synthetic', or a text file path."""
    data_max_bytes: int = 4_000_000
    inject: tuple[str, ...] = ()
    """Fault-injection events, e.g. 'bad_batch@50', 'lr_spike@40:factor=10,steps=5',
    'grad_scale@30:factor=1e6' (see stabdiag.train.inject)."""
    stop_after_nonfinite: int = 20
    """Stop once the loss has been non-finite for this many consecutive steps; 0 = never."""
    guard: Guard = "off"
    """The in-loop guard (stabdiag.live.Monitor on the values each log interval brings to the host):
    'warn' reports findings at or above guard_level, 'stop' also saves a checkpoint and ends the
    run on the first one, 'skip' skips the optimizer step of an outlier loss or grad norm (at most
    3 in a row; costs one host sync per step, for this step's loss). 'off' = not run."""
    guard_level: GuardLevel = "warning"
    """The severity at which the guard reports (and 'stop' stops)."""
    tensorboard: bool = True
    out_dir: str = "runs"
    run_name: str = ""
    """Empty: '<preset>-<recipe>', with a numeric suffix if that directory exists."""
    preset: str = ""
    """Informational: the preset this config was resolved from."""
    recipe: str = ""
    """Informational: the recipe this config was resolved from."""

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise TrainError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        for name in (
            "n_layer",
            "n_embd",
            "n_head",
            "block_size",
            "steps",
            "batch_size",
            "eval_interval",
            "eval_batches",
            "log_interval",
            "loss_scale_growth_interval",
        ):
            if getattr(self, name) < 1:
                raise TrainError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.vocab_size != 256:
            raise TrainError("vocab_size must be 256 (the model is byte-level)")
        for name in (
            "lr",
            "min_lr",
            "grad_clip",
            "softmax_cap",
            "z_loss",
            "dropout",
            "warmup_steps",
            "seq_warmup_steps",
            "checkpoint_interval",
        ):
            if getattr(self, name) < 0:
                raise TrainError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name, kind in _HINTS.items():
            choices = typing.get_args(kind) if typing.get_origin(kind) is Literal else ()
            if choices and getattr(self, name) not in choices:
                raise TrainError(
                    f"{name} must be one of {', '.join(choices)}; got {getattr(self, name)!r}"
                )
        from stabdiag.train.inject import parse_events  # no torch

        if self.threads < 0 or self.keep_checkpoints < 0:
            raise TrainError("threads and keep_checkpoints must be >= 0")
        for spec, event in zip(self.inject, parse_events(self.inject), strict=True):
            if event.step >= self.steps:  # else it would be recorded as injected but never run
                raise TrainError(
                    f"inject '{spec}': step {event.step} is after the run's last "
                    f"step ({self.steps - 1}; steps={self.steps})"
                )
        parse_skips(self.skip_batches)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["inject"] = list(self.inject)
        d["skip_batches"] = list(self.skip_batches)
        return d

    @classmethod
    def from_dict(cls, saved: Mapping[str, Any], *, where: str) -> TrainConfig:
        """A run's config.json back into a TrainConfig (keys this version lacks are refused)."""
        unknown = sorted(set(saved) - set(_HINTS))
        if unknown:
            raise TrainError(
                f"{where}: unknown config {words.plural('key', len(unknown))} {', '.join(unknown)}"
            )
        values = {
            k: tuple(v) if typing.get_origin(_HINTS[k]) is tuple else v for k, v in saved.items()
        }
        return cls(**values)


def parse_skips(specs: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """'A:B' strings -> sorted, non-overlapping (A, B) index ranges (inclusive)."""
    out = []
    for spec in specs:
        a, sep, b = str(spec).partition(":")
        try:
            lo, hi = int(a), int(b if sep else a)
        except ValueError:
            raise TrainError(f"skip_batches '{spec}': expected A:B, two batch indices") from None
        if lo < 0 or hi < lo:
            raise TrainError(f"skip_batches '{spec}': expected 0 <= A <= B")
        out.append((lo, hi))
    out.sort()
    for (_, b), (c, _) in zip(out, out[1:], strict=False):
        if c <= b:
            raise TrainError(f"skip_batches: ranges overlap at batch {c}")
    return tuple(out)


def data_index(step: int, skips: tuple[tuple[int, int], ...]) -> int:
    """The data batch step `step` trains on: the step-th index once the skipped (inclusive,
    sorted, disjoint) ranges of `parse_skips` are taken out of 0, 1, 2, ... Here, beside the
    parser and free of torch, so that planning (verify) and training use the one rule."""
    index = step
    for lo, hi in skips:
        if index >= lo:
            index += hi - lo + 1
    return index


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS keeps one): the budget
    the trainer's default thread count and the sweep's local slots share out."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def derived_keys(cfg: TrainConfig) -> dict[str, Callable[[TrainConfig], Any]]:
    """Keys cfg's preset and recipe compute from other keys (e.g. the stable recipe's warm-up,
    10% of steps). Resume keeps a derived key's saved value when only its inputs changed."""
    out: dict[str, Callable[[TrainConfig], Any]] = {}
    for layer in (PRESETS.get(cfg.preset, {}), RECIPES.get(cfg.recipe, {})):
        for key, value in layer.items():
            if callable(value):
                out[key] = value
            else:
                out.pop(key, None)
    return out


_HINTS: dict[str, Any] = {}  # filled below, once the class exists
_HINTS.update(typing.get_type_hints(TrainConfig))
FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))

RESTART_FREE = frozenset(
    {
        "steps",
        "eval_interval",
        "eval_batches",
        "log_interval",
        "checkpoint_interval",
        "keep_checkpoints",
        "stop_after_nonfinite",
        "tensorboard",
        "device",
        "threads",
        "inject",
    }
)
"""What a run restarted from one of its checkpoints (a resume, a branch) may change: how long it
runs, how it logs, checkpoints and stops, where it runs and the faults it injects. A resume and a
branch each add their own keys to these."""

# Presets size the run; recipes choose the stabilizers. Values may be callables of the config
# so far (e.g. warmup as a fraction of the preset's steps).
Overrides = Mapping[str, Any | Callable[[TrainConfig], Any]]

PRESETS: dict[str, Overrides] = {
    # CPU, well under a minute: 0.1M params, 300 steps of 16x64 bytes.
    "tiny": dict(
        n_layer=2,
        n_embd=64,
        n_head=4,
        block_size=64,
        batch_size=16,
        steps=300,
        eval_interval=50,
        log_interval=10,
        data_max_bytes=2_000_000,
        checkpoint_interval=50,
    ),
    # CPU, a few minutes: 0.8M params.
    "small": dict(
        n_layer=4,
        n_embd=128,
        n_head=4,
        block_size=128,
        batch_size=32,
        steps=600,
        eval_interval=100,
        log_interval=20,
        data_max_bytes=8_000_000,
        checkpoint_interval=100,
    ),
    # One GPU, about a minute: 11M params.
    "gpu": dict(
        n_layer=6,
        n_embd=384,
        n_head=6,
        block_size=256,
        batch_size=64,
        steps=1500,
        eval_interval=250,
        log_interval=50,
        data_max_bytes=32_000_000,
        checkpoint_interval=250,
        device="cuda",
    ),
}

RECIPES: dict[str, Overrides] = {
    # Pre-LN, 10% linear warmup, clip 1.0, a moderate LR, bf16 on GPU and fp32 on CPU.
    "stable": dict(
        norm_placement="pre",
        lr=3e-3,
        min_lr=3e-4,
        grad_clip=1.0,
        decay="cosine",
        warmup_steps=lambda c: max(1, c.steps // 10),
        precision=lambda c: "bf16" if c.device == "cuda" else "fp32",
    ),
    # The classic recipe for trouble: post-LN without warmup (Xiong et al. 2020), a LR ~100x
    # too high, no clipping, fp16 whose loss scaler probes upward every 25 steps. On `tiny` the
    # attention logits outgrow fp16 within ~20 steps: loss NaN, overflow skips, scale collapse.
    "unstable": dict(
        norm_placement="post",
        lr=0.3,
        min_lr=0.3,
        decay="constant",
        warmup_steps=0,
        grad_clip=0.0,
        precision="fp16",
        weight_decay=0.0,
        loss_scale_growth_interval=25,
    ),
}


def _closest(key: str, options: Sequence[str]) -> str:
    hits = difflib.get_close_matches(key, options, n=1, cutoff=0.5)
    return f"; did you mean '{hits[0]}'?" if hits else f". Known keys: {', '.join(options)}"


def _coerce(key: str, raw: Any, *, where: str) -> Any:
    """Turn a TOML value or an override string into the field's type, or raise TrainError."""
    kind = _HINTS[key]
    origin = typing.get_origin(kind)
    bad = TrainError(f"{where}: {key} expects {_type_name(kind)}, got {raw!r}")
    if origin is Literal:
        if raw not in typing.get_args(kind):
            raise TrainError(
                f"{where}: {key} must be one of {', '.join(typing.get_args(kind))}; got {raw!r}"
            )
        return raw
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(raw, str) and raw.lower() in ("0", "false", "no", "off"):
            return False
        raise bad
    if kind is int:
        if isinstance(raw, bool):
            raise bad
        if isinstance(raw, int):
            return raw
        try:
            value = float(raw) if isinstance(raw, str) else raw
            if isinstance(value, float) and value.is_integer():
                return int(value)  # accepts '1e3'
        except ValueError:
            pass
        raise bad
    if kind is float:
        if isinstance(raw, bool):
            raise bad
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise bad from None
    if origin is tuple:
        if isinstance(raw, str):
            return (raw,) if raw else ()
        if isinstance(raw, (list, tuple)) and all(isinstance(x, str) for x in raw):
            return tuple(raw)
        raise bad
    if kind is str:
        return str(raw) if isinstance(raw, (str, int, float)) else _raise(bad)
    raise bad


def _raise(exc: Exception) -> Any:
    raise exc


def _type_name(kind: Any) -> str:
    if typing.get_origin(kind) is tuple:
        return "a list of strings"
    return getattr(kind, "__name__", str(kind))


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise TrainError(f"{path}: cannot read config file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise TrainError(
            f"{path}: expected a TOML config file, found invalid TOML ({exc})"
        ) from None
    # Either flat keys or a [train] table (so one stabdiag.toml can hold several sections).
    table = doc.get("train", doc)
    if not isinstance(table, dict):
        raise TrainError(f"{path}: expected a [train] table of config keys")
    return table


def resolve(
    preset: str = "tiny",
    recipe: str | None = "stable",
    config_file: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> TrainConfig:
    """Build a TrainConfig from a preset, a recipe, a TOML file and `key=value` overrides.

    Tuple-valued keys (`inject`) accumulate across repeated overrides; `inject=` clears them.
    """
    if preset not in PRESETS:
        raise TrainError(f"unknown preset '{preset}'{_closest(preset, list(PRESETS))}")
    if recipe and recipe not in RECIPES:
        raise TrainError(f"unknown recipe '{recipe}'{_closest(recipe, list(RECIPES))}")
    values: dict[str, Any] = {"preset": preset, "recipe": recipe or ""}
    derived: dict[str, Callable[[TrainConfig], Any]] = {}  # recomputed once all layers are in

    def apply(layer: Overrides, where: str, *, coerce: bool) -> None:
        for key, raw in layer.items():
            if key not in _HINTS:
                raise TrainError(f"{where}: unknown config key '{key}'{_closest(key, FIELDS)}")
            derived.pop(key, None)
            if callable(raw):
                derived[key] = raw
                raw = raw(TrainConfig(**values))
            values[key] = _coerce(key, raw, where=where) if coerce else raw

    apply(PRESETS[preset], f"preset {preset}", coerce=False)
    if recipe:
        apply(RECIPES[recipe], f"recipe {recipe}", coerce=False)
    if config_file is not None:
        apply(_load_toml(Path(config_file)), str(config_file), coerce=True)
    accumulated: dict[str, tuple[str, ...]] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise TrainError(f"override '{item}': expected key=value")
        if key not in _HINTS:
            raise TrainError(
                f"override '{item}': unknown config key '{key}'{_closest(key, FIELDS)}"
            )
        if typing.get_origin(_HINTS[key]) is tuple:
            accumulated[key] = accumulated.get(key, ()) + _coerce(key, raw, where="override")
            values[key] = accumulated[key]
        else:
            values[key] = _coerce(key, raw.strip(), where="override")
        derived.pop(key, None)
    # e.g. the stable recipe's warmup (10% of steps) follows a `steps=` override
    values.update({key: fn(TrainConfig(**values)) for key, fn in derived.items()})
    return TrainConfig(**values)


def resolve_overrides(
    base: TrainConfig, overrides: Sequence[str], *, where: str = "override"
) -> dict[str, Any]:
    """`key=value` strings -> {key: typed value} on top of `base` (tuple keys accumulate onto an
    empty tuple, as in `resolve`); unknown keys and bad values raise TrainError."""
    values: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise TrainError(f"{where} '{item}': expected key=value")
        if key not in _HINTS:
            raise TrainError(f"{where} '{item}': unknown config key '{key}'{_closest(key, FIELDS)}")
        if typing.get_origin(_HINTS[key]) is tuple:
            values[key] = values.get(key, ()) + _coerce(key, raw, where=where)
        else:
            values[key] = _coerce(key, raw.strip(), where=where)
    return values


def replace(cfg: TrainConfig, **changes: Any) -> TrainConfig:
    """dataclasses.replace with the same unknown-key message as `resolve`."""
    for key in changes:
        if key not in _HINTS:
            raise TrainError(f"unknown config key '{key}'{_closest(key, FIELDS)}")
    return dataclasses.replace(cfg, **changes)
