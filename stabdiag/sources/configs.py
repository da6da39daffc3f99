"""Read a run's configuration from what lies beside (or inside) its logs -> ``RunConfig``.

Where each framework leaves its configuration, and what is read (never a pickle such as HF's
``training_args.bin``, never code; YAML through ``safe_yaml``, Python-literal dicts in DeepSpeed's
printout through ``ast.literal_eval``, which builds literals only):

- ``stabdiag train``: ``config.json`` (the TrainConfig) and ``run.json`` (injected faults).
- HF Trainer: the TensorBoard text summaries ``args/text_summary`` (TrainingArguments as JSON)
  and ``model_config/text_summary``, in the run's event files or its ``runs/*`` mirror;
  ``trainer_state.json`` (max_steps, batch size, and the best checkpoint, from which the metric it
  was chosen by is recognised); a printed ``TrainingArguments(...)`` in stdout.
- Lightning: ``hparams.yaml`` (already read into ``meta['hparams']``) and a LightningCLI
  ``config.yaml`` (``trainer.gradient_clip_val``, ``trainer.precision``).
- Megatron-LM: the ``---- arguments ----`` block it prints at the top of stdout.
- DeepSpeed: the ``DeepSpeedEngine configuration:`` printout and its ``json = {...}`` user config;
  a ``cmd = deepspeed main.py --key value`` line (DeepSpeed-Chat).
- W&B: ``files/config.yaml`` of the run dir; MLflow: ``params/`` of the run dir.
- Anything else: ``config.json``, ``args.json``, ``hparams.json``, ``hparams.yaml``,
  ``config.yaml``, ``params.json`` beside the log, with common key spellings (runconfig.KEYS).

Every reader is best effort: a missing or malformed file contributes nothing and never fails
the run's analysis (the metrics are the product; the configuration sharpens the advice).
"""

from __future__ import annotations

import ast
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from stabdiag import runconfig as rc
from stabdiag.sources import hf_trainer, safe_yaml, tensorboard

MAX_CONFIG_BYTES = 1 << 20  # a configuration file; larger is not one
TEXT_HEAD_BYTES = 8 << 20  # how far into a stdout log argument dumps are looked for
EVENT_HEAD_BYTES = 4 << 20  # HF writes its text summaries into the first records
GENERIC_NAMES = (
    "config.json",
    "args.json",
    "hparams.json",
    "params.json",
    "hparams.yaml",
    "config.yaml",
    "training_args.json",
    "train_config.json",
)

Layer = tuple[str, dict[str, Any]]
# Formats whose files are not captured stdout (no printed argument dump to look for).
_NO_ARGUMENT_DUMPS = frozenset(
    {
        "tensorboard",
        "hf-trainer-state",
        "csv",
        "jsonl",
        "lightning-csv",
        "mlflow",
        "wandb-offline",
        "wandb-csv",
    }
)
NamesIn = Callable[[Path], "frozenset[str] | None"]


def dir_names(run_dir: Path) -> frozenset[str] | None:
    """The lower-cased entry names of a directory (None: it cannot be listed). Loading many
    small runs calls this once per directory (cached by the caller) instead of probing every
    configuration name with a stat per run (issue 13 R4: 9 stats a run). Lower-cased so that a
    case-insensitive filesystem, where ``Config.JSON`` answers to ``config.json``, filters
    nothing out that a probe would find."""
    try:
        return frozenset(n.lower() for n in os.listdir(run_dir))
    except (OSError, ValueError):
        return None


def _may_exist(names: frozenset[str] | None, name: str) -> bool:
    """False only when the directory's listing (``names``; None: not listed) shows no entry of
    that name (then a probe would find nothing); the probe itself still decides the rest."""
    return names is None or name.lower() in names


def for_run(
    path: str | Path,
    fmt: str,
    meta: Mapping[str, Any],
    files: Sequence[Path] = (),
    names_in: NamesIn | None = None,
) -> rc.RunConfig:
    """The RunConfig of one run read from ``path`` (its file or directory) in format ``fmt``.
    ``names_in``: a cached ``dir_names``, so absent configuration files cost no stat each."""
    p = Path(path)
    run_dir = p if p.is_dir() else p.parent
    if fmt == "hf-trainer-state" and p.is_file():
        run_dir = hf_trainer.output_dir(p)  # a checkpoint-N/ copy belongs to its output dir
    layers: list[Layer] = []
    framework, fw_src = "", ""
    extra: dict[str, rc.Setting] = {}

    names = names_in(run_dir) if names_in is not None else None
    stab = _stabdiag(run_dir) if _may_exist(names, "run.json") else None
    if stab is not None:
        layers += stab[0]
        framework, fw_src = rc.STABDIAG, stab[1]
        if stab[2] is not None:
            extra["injected"] = stab[2]
    if fmt in ("tensorboard", "hf-trainer-state"):
        hf = _hf_text_summaries(run_dir, files if fmt == "tensorboard" else ())
        if hf:
            layers += hf
            framework, fw_src = framework or rc.HF, fw_src or hf[0][0]
    if fmt == "hf-trainer-state":
        state = _trainer_state(p if p.is_file() else run_dir / "trainer_state.json")
        if state is not None:
            layers.append(state[0])
            extra.update(state[1])
            framework, fw_src = framework or rc.HF, fw_src or state[0][0]
    if fmt == "lightning-csv":
        hp = meta.get("hparams")
        if isinstance(hp, Mapping) and hp:
            layers.append((f"{run_dir / 'hparams.yaml'}", rc.flatten(hp)))
        cli = _lightning_cli(run_dir)
        if cli:
            layers.append(cli)
        framework, fw_src = framework or rc.LIGHTNING, fw_src or f"{p} (Lightning CSVLogger)"
    if fmt == "mlflow":
        params = _mlflow_params(run_dir)
        if params:
            layers.append(params)
    if fmt == "wandb-offline":
        wb = _yaml(run_dir / "files" / "config.yaml")
        if wb:
            layers.append(wb)
    if fmt not in _NO_ARGUMENT_DUMPS and p.is_file():  # the cheap test first: no stat
        text_layers, fw = _stdout_dumps(p)
        layers += text_layers
        if fw and not framework:
            framework, fw_src = fw, f"{p} (argument dump)"
    if stab is None:
        for name in GENERIC_NAMES:
            got = _generic(run_dir / name) if _may_exist(names, name) else None
            if got:
                layers.append(got)
    if not framework:
        framework, fw_src = _framework_from_keys(layers, fmt, p)
    return rc.build(layers, framework=framework, framework_source=fw_src, extra=extra)


# --------------------------------------------------------------------------- file helpers


def _small(path: Path) -> str | None:
    try:
        if not path.is_file() or path.stat().st_size > MAX_CONFIG_BYTES:
            return None
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _json(path: Path) -> dict[str, Any] | None:
    text = _small(path)
    if text is None:
        return None
    try:
        d = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return d if isinstance(d, dict) else None


def _yaml(path: Path) -> Layer | None:
    if not path.is_file():
        return None
    try:
        d = safe_yaml.load(safe_yaml.read_text(path))
    except Exception:  # noqa: BLE001 - malformed YAML contributes nothing
        return None
    return (str(path), rc.flatten(d)) if isinstance(d, dict) else None


def _generic(path: Path) -> Layer | None:
    if path.suffix == ".yaml":
        return _yaml(path)
    d = _json(path)
    return (str(path), rc.flatten(d)) if d else None


# --------------------------------------------------------------------------- stabdiag train


def _stabdiag(run_dir: Path) -> tuple[list[Layer], str, rc.Setting | None] | None:
    """config.json + run.json of a ``stabdiag train`` run (run.json carries stabdiag_version)."""
    run = _json(run_dir / "run.json")
    if not run or "stabdiag_version" not in run:
        return None
    cfg = _json(run_dir / "config.json") or {}
    flat = rc.flatten(cfg)
    if "decay" in cfg:  # the TrainConfig's schedule field
        flat["lr_schedule"] = cfg["decay"]
    if cfg.get("warmup_steps") is not None and not cfg.get("warmup_steps"):
        flat["warmup_steps"] = 0
    layers = [(str(run_dir / "config.json"), flat)] if cfg else []
    layers.append((str(run_dir / "run.json"), {"precision": run.get("precision")}))
    inj = run.get("injected")
    injected = (
        rc.Setting(
            tuple(e for e in inj if isinstance(e, dict)), f"{run_dir / 'run.json'}: injected"
        )
        if isinstance(inj, list) and inj
        else None
    )
    return layers, str(run_dir / "run.json"), injected


# --------------------------------------------------------------------------- HF Trainer


def _hf_text_summaries(run_dir: Path, files: Sequence[Path]) -> list[Layer]:
    """TrainingArguments and model config that HF's TensorBoardCallback writes as text."""
    candidates = list(files) or _event_files_under(run_dir)
    args: Layer | None = None
    model: Layer | None = None
    for f in candidates[:32]:
        for tag, text in text_summaries(f):
            if tag.startswith("args") and args is None:
                d = _loads(text)
                if d:
                    args = (f"{f}: {tag}", rc.flatten(d))
            elif tag.startswith("model_config") and model is None:
                d = _loads(text)
                if d:
                    model = (f"{f}: {tag}", rc.flatten(d))
        if args and model:
            break
    return [x for x in (args, model) if x]


def _loads(text: str) -> dict[str, Any] | None:
    try:
        d = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return d if isinstance(d, dict) else None


def _event_files_under(run_dir: Path) -> list[Path]:
    """Event files of an HF output dir's TensorBoard mirror (``runs/<date>/``, or the dir itself)."""
    out: list[Path] = []
    for d in (run_dir, run_dir / "runs"):
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            continue
        for e in entries:
            if e.is_file() and tensorboard.is_event_file(Path(e.path)):
                out.append(Path(e.path))
            elif d.name == "runs" and e.is_dir():
                try:
                    out += sorted(
                        Path(x.path)
                        for x in os.scandir(e.path)
                        if x.is_file() and tensorboard.is_event_file(Path(x.path))
                    )
                except OSError:
                    continue
    return out


def text_summaries(path: Path, limit: int = EVENT_HEAD_BYTES) -> Iterator[tuple[str, str]]:
    """(tag, text) of every text summary (``add_text``) in the first ``limit`` bytes of an event
    file. TFRecord framing is walked without CRC checks: a damaged record ends the walk."""
    try:
        with open(path, "rb") as fh:
            buf = fh.read(limit)
    except OSError:
        return
    if b"text_summary" not in buf:
        return  # the common case (no add_text at all): no record walk
    pos, n = 0, len(buf)
    while pos + 12 <= n:
        length = int.from_bytes(buf[pos : pos + 8], "little")
        start, end = pos + 12, pos + 12 + length
        if end + 4 > n or length > limit:
            return
        if b"text_summary" in buf[start:end]:
            try:
                yield from _text_values(buf, start, end)
            except (ValueError, IndexError):
                return
        pos = end + 4


def _text_values(buf: bytes, s: int, e: int) -> Iterator[tuple[str, str]]:
    fields = tensorboard._fields  # the project's protobuf wire walker
    for f, w, v in fields(buf, s, e):
        if f != 5 or w != 2:  # Event.summary
            continue
        for f2, w2, v2 in fields(buf, *v):
            if f2 != 1 or w2 != 2:  # Summary.value
                continue
            tag, text = "", None
            for f3, w3, v3 in fields(buf, *v2):
                if f3 == 1 and w3 == 2:
                    tag = buf[v3[0] : v3[1]].decode("utf-8", "replace")
                elif f3 == 8 and w3 == 2:  # TensorProto: string_val (field 8)
                    for f4, w4, v4 in fields(buf, *v3):
                        if f4 == 8 and w4 == 2:
                            text = buf[v4[0] : v4[1]].decode("utf-8", "replace")
                            break
            if tag and text is not None:
                yield tag.removesuffix("/text_summary"), text


def _trainer_state(path: Path) -> tuple[Layer, dict[str, rc.Setting]] | None:
    """max_steps and batch size from trainer_state.json, and the metric the best checkpoint was
    chosen by: the eval_* value logged at the best checkpoint's step that equals best_metric
    (HF records the value, not the name; the name is in the pickled training_args.bin, never opened)."""
    text = _small_or_big(path)
    if text is None:
        return None
    try:
        d = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(d, dict):
        return None
    layer = {
        k: d[k] for k in ("max_steps", "train_batch_size") if isinstance(d.get(k), int | float)
    }
    extra: dict[str, rc.Setting] = {}
    best, ckpt = d.get("best_metric"), d.get("best_model_checkpoint")
    m = re.search(r"checkpoint-(\d+)", str(ckpt or ""))
    if isinstance(best, int | float) and m and isinstance(d.get("log_history"), list):
        step = int(m.group(1))
        for e in d["log_history"]:
            if not isinstance(e, dict) or e.get("step") != step:
                continue
            keys = [
                k
                for k, v in e.items()
                if k.startswith("eval_")
                and isinstance(v, int | float)
                and not isinstance(v, bool)
                and abs(v - best) <= 1e-9 * max(1.0, abs(best))
                and not k.endswith(("runtime", "per_second"))
            ]
            if len(keys) == 1:
                extra["metric_for_best_model"] = rc.Setting(
                    keys[0], f"{path}: best_metric {best:g} = {keys[0]} at step {step}, {ckpt}"
                )
                break
    return (str(path), layer), extra


def _small_or_big(path: Path, cap: int = 256 << 20) -> str | None:
    try:
        if not path.is_file() or path.stat().st_size > cap:
            return None
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


# --------------------------------------------------------------------------- Lightning, MLflow


def _lightning_cli(run_dir: Path) -> Layer | None:
    """LightningCLI's saved ``config.yaml`` (trainer.gradient_clip_val, trainer.precision, model.*)."""
    for d in (run_dir, run_dir.parent, run_dir.parent.parent):
        got = _yaml(d / "config.yaml")
        if got:
            return got
    return None


def _mlflow_params(run_dir: Path) -> Layer | None:
    params = run_dir / "params"
    try:
        entries = sorted(os.scandir(params), key=lambda e: e.name)[:500]
    except OSError:
        return None
    out: dict[str, Any] = {}
    for e in entries:
        if e.is_file():
            text = _small(Path(e.path))
            if text is not None and len(text) <= 1000:
                out[rc.norm_key(e.name)] = text.strip()
    return (str(params), out) if out else None


# --------------------------------------------------------------------------- stdout dumps

_DOTS = re.compile(r"^(?:\[[^\]]*\]\s*)*\s{1,6}([A-Za-z_][\w.]*)\s+\.{2,}\s+(.*?)\s*$")
_ARGS_START = re.compile(r"-{3,}\s*arguments\s*-{3,}")
_ARGS_END = re.compile(r"-{3,}\s*end of arguments\s*-{3,}")
# Every line the dump parser acts on holds one of these: "---- arguments ----" and "--key"
# command lines hold "--", a "key .... value" line holds "..".
_DUMP_MARKERS = ("--", "..", "TrainingArguments(", "json = {")
_TRAINING_ARGS = re.compile(r"TrainingArguments\((.*)\)?")
_KV = re.compile(r"(?:^|,\s*)([A-Za-z_]\w*)=([^,]*)")


def _stdout_dumps(path: Path) -> tuple[list[Layer], str]:
    """Argument dumps printed at the top of a training log, and the framework they show."""
    try:
        with open(path, "rb") as fh:
            text = fh.read(TEXT_HEAD_BYTES).decode("utf-8", "replace")
    except OSError:
        return [], ""
    if not any(marker in text for marker in _DUMP_MARKERS):
        return [], ""  # no line below can match: a plain metrics log, answered in one pass
    meg: dict[str, Any] = {}
    ds: dict[str, Any] = {}
    hf: dict[str, Any] = {}
    cmd: dict[str, Any] = {}
    user_json: dict[str, Any] = {}
    in_args = False
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if _ARGS_START.search(line) and "end of" not in line:
            in_args = True
            continue
        if in_args and _ARGS_END.search(line):
            in_args = False
            continue
        m = _DOTS.match(line)
        if m:
            key, val = m.group(1), m.group(2)
            if in_args:
                meg.setdefault(rc.norm_key(key), val)
            elif "print]" in line or "config.py" in line:
                ds.setdefault(rc.norm_key(key), _literal(val))
            continue
        if not hf and "TrainingArguments(" in line:
            body = line.split("TrainingArguments(", 1)[1]
            hf = {rc.norm_key(k): v.strip() for k, v in _KV.findall(body)}
            continue
        if "json = {" in line and not user_json:
            user_json = _json_block(lines, i)
            continue
        if not cmd and i < 2000 and "--" in line and ".py" in line:
            cmd = _command(line)
    layers: list[Layer] = []
    fw = ""
    if meg:
        layers.append((f"{path}: arguments", meg))
        fw = rc.MEGATRON
    if hf:
        layers.append((f"{path}: TrainingArguments", hf))
        fw = fw or rc.HF
    if user_json:
        layers.append((f"{path}: DeepSpeed json", rc.flatten(user_json)))
    if ds:
        layers.append((f"{path}: DeepSpeedEngine configuration", rc.flatten(ds)))
        fw = fw or rc.DEEPSPEED
    if cmd:
        layers.append((f"{path}: command line", cmd))
        if not fw and "deepspeed" in str(cmd.get("__launcher__", "")):
            fw = rc.DEEPSPEED
    return layers, fw


_CMD_PREFIXES = ("cmd =", "cmd=", "export 'CMD=", "export CMD=", "CMD='", "CMD=")


def _command(line: str) -> dict[str, Any]:
    """``--key value`` pairs of a printed launch command (``cmd = deepspeed main.py --lr ...``)."""
    s = line.strip().lstrip("+").strip()
    for pre in _CMD_PREFIXES:
        if s.startswith(pre):
            s = s[len(pre) :]
            break
    toks = s.replace("'", " ").replace('"', " ").split()
    py = next((i for i, t in enumerate(toks) if t.endswith(".py")), None)
    if py is None or not any(t.startswith("--") for t in toks[py + 1 :]):
        return {}
    return {**_argv(toks[py + 1 :]), "__launcher__": " ".join(toks[:py])}


def _argv(toks: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    i = 0
    while i < len(toks):
        t = toks[i]
        if t.startswith("--") and len(t) > 2:
            key = rc.norm_key(t[2:].split("=", 1)[0])
            if "=" in t:
                out[key] = t.split("=", 1)[1]
            elif i + 1 < len(toks) and not toks[i + 1].startswith("--"):
                out[key] = toks[i + 1]
                i += 1
            else:
                out[key] = True
        i += 1
    return out


def _literal(val: str) -> Any:  # noqa: ANN401 - a printed value
    """DeepSpeed prints dicts as Python literals: ``literal_eval`` builds literals only."""
    v = val.strip()
    if v.startswith(("{", "[")) and len(v) <= 4000:
        try:
            return ast.literal_eval(v)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return v
    return v


def _json_block(lines: Sequence[str], i: int) -> dict[str, Any]:
    """The ``json = {...}`` block DeepSpeed prints, up to its closing brace (at most 400 lines)."""
    first = lines[i].split("json = ", 1)[1]
    buf = [first]
    depth = first.count("{") - first.count("}")
    for line in lines[i + 1 : i + 400]:
        if depth <= 0:
            break
        buf.append(line)
        depth += line.count("{") - line.count("}")
    try:
        d = json.loads("\n".join(buf))
    except (ValueError, RecursionError):
        return {}
    return d if isinstance(d, dict) else {}


# --------------------------------------------------------------------------- framework


def _framework_from_keys(layers: Sequence[Layer], fmt: str, p: Path) -> tuple[str, str]:
    """A framework recognised by keys only it writes (HF's TrainingArguments logged to W&B)."""
    for label, layer in layers:
        keys = set(layer)
        if {"per_device_train_batch_size", "max_grad_norm"} <= keys:
            return rc.HF, f"{label} (TrainingArguments keys)"
        if {"clip_grad", "lr_warmup_iters"} <= keys:
            return rc.MEGATRON, f"{label} (Megatron argument names)"
        if "gradient_clip_val" in {k.rsplit(".", 1)[-1] for k in keys}:
            return rc.LIGHTNING, f"{label} (Lightning trainer keys)"
    if fmt == "megatron":
        return rc.MEGATRON, f"{p} (Megatron log lines)"
    if fmt in ("hf-stdout",):
        return rc.HF, f"{p} (HF Trainer log lines)"
    return "", ""


def read_safely(
    path: str | Path,
    fmt: str,
    meta: Mapping[str, Any],
    files: Sequence[Path] = (),
    names_in: NamesIn | None = None,
) -> rc.RunConfig:
    """``for_run`` that never fails the load: the configuration only sharpens the advice."""
    try:
        return for_run(path, fmt, meta, files, names_in)
    except Exception:  # noqa: BLE001 - a reader bug on odd metadata must not lose the run's metrics
        return rc.RunConfig()
