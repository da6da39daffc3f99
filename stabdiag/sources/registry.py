"""The log formats stabdiag reads: one ``Reader`` record per format, all in ``READERS``.

Everything that depends on the set of formats comes from this one tuple: sniffing (the first
reader whose ``looks_like`` claims a file reads it, so the order is the precedence), the names
``--input-format`` accepts, the family a forced format reads in a folder walk, and the
``stabdiag formats`` table. A new format is one module and one record here.

Every record has the same two calls: ``looks_like(path, head)`` (``head`` is the file's first
64 KiB as bytes; name-only checks ignore it) and ``read(group)`` (one planned run of
``runs.plan``, giving its runs). Captured-stdout formats also carry ``stdout(path)``, the
per-file reader the launcher layer hands each rank's lines of a ``torchrun`` log to.

Checkpoints and other binaries never reach a ``looks_like``: ``sniff.is_skipped`` turns them
away by name before any byte is read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stabdiag.errors import SourceError
from stabdiag.sources import (
    aliases,
    deepspeed,
    fairseq,
    hf_stdout,
    hf_trainer,
    jsonl,
    launcher,
    lightning,
    llmc,
    megatron,
    mlflow,
    nanogpt,
    tensorboard,
    textlog,
    torchtitan,
    verl,
    wandb_csv,
    wandb_offline,
)
from stabdiag.sources import csv as csv_reader
from stabdiag.sources.raw import RawRun
from stabdiag.sources.tabular import STEP_COLUMNS

if TYPE_CHECKING:
    from stabdiag.sources.runs import RunGroup

TENSORBOARD = "tensorboard"
HF_TRAINER_STATE = hf_trainer.FORMAT
LIGHTNING_CSV = lightning.FORMAT
CSV = csv_reader.FORMAT
JSONL = jsonl.FORMAT
MLFLOW = mlflow.FORMAT
WANDB_CSV = wandb_csv.FORMAT
WANDB_OFFLINE = wandb_offline.FORMAT

HEAD_BYTES = textlog.HEAD_BYTES  # what every looks_like is shown (name-only checks ignore it)
_JSON_HEAD = 4096  # the JSON/CSV header checks look at the first 4 KiB only
_TEE_DEEP_BYTES = 8 << 20  # how far a torchrun --tee file is searched for metric lines


@dataclass(frozen=True)
class Reader:
    """One log format: how it is recognised, how a run of it is read, how it is listed."""

    name: str  # the --input-format name, and RunInfo.format
    family: frozenset[str]  # what a folder walk reads when this format is forced
    example: str  # example paths, for `stabdiag formats`
    looks_like: Callable[[Path, bytes], bool]  # (path, first 64 KiB) -> this format?
    read: Callable[[RunGroup], list[RawRun]]  # one planned run -> its runs
    stdout: Callable[[Path], list[RawRun]] | None = None  # captured stdout: one file's reader


# --------------------------------------------------------------------------- looks_like bodies
# (for the modules whose only job is parsing; the others define looks_like themselves)


def _tensorboard(path: Path, head: bytes) -> bool:
    """An ``events.out.tfevents.*`` name, or a suffix-less file starting with a TFRecord header."""
    if tensorboard.is_event_file(path):
        return True
    return not path.suffix and tensorboard.looks_like_tfrecord(head[:12])


def _wandb_offline(path: Path, head: bytes) -> bool:
    return path.name.lower().endswith(".wandb") and head[:4] == wandb_offline.MAGIC


def _wandb_csv(path: Path, head: bytes) -> bool:
    return path.name.lower().endswith(".csv") and wandb_csv.looks_like(
        path, head[:_JSON_HEAD].decode("utf-8", "replace")
    )


def _csv(path: Path, head: bytes) -> bool:
    return path.name.lower().endswith(".csv")


def _jsonl(path: Path, head: bytes) -> bool:
    """``*.jsonl``/``*.ndjson``, or a ``.json`` whose first line is one JSON object with a step
    key (a plain config.json is not a metrics log)."""
    name = path.name.lower()
    if name.endswith((".jsonl", ".ndjson")):
        return True
    if not name.endswith(".json") or name in hf_trainer.NOT_LOGS:
        return False
    head = head[:_JSON_HEAD]
    line = head.split(b"\n", 1)[0].strip()
    if not (line.startswith(b"{") and line.endswith(b"}")) or b"\n" not in head:
        return False
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return False
    return isinstance(obj, dict) and any(k.lower() in STEP_COLUMNS for k in obj)


# --------------------------------------------------------------------------- read bodies


def _read_tensorboard(g: RunGroup) -> list[RawRun]:
    """All event files of a run dir (Keras ``validation/`` files prefixed); parsed event files
    are cached (``STABDIAG_NO_CACHE=1`` or ``use_cache=False`` disables it)."""
    from stabdiag.sources import cache

    read = cache.read_event_file if g.use_cache and cache.enabled() else None
    main = tensorboard.read_files(g.files, read=read)
    parts = [(main, "")]
    if g.extra:
        parts.append((tensorboard.read_files(g.extra, read=read), g.extra[0].parent.name + "/"))
    if all(p.records == 0 for p, _ in parts):
        raise SourceError(
            g.files[0],
            "TensorBoard event records (TFRecord framing)",
            "no readable record"
            + (f" ({parts[0][0].warnings[0]})" if parts[0][0].warnings else ""),
        )
    names: list[str] = []
    codes, warnings = [], []
    for s, prefix in parts:
        offset = len(names)
        names += [prefix + t for t in s.tags]
        codes.append(s.codes + offset)
        warnings += s.warnings
    return [
        RawRun(
            name=g.path.resolve().name,
            path=str(g.path),
            format=TENSORBOARD,
            names=tuple(names),
            codes=np.concatenate(codes).astype(np.int32),
            steps=np.concatenate([s.steps for s, _ in parts]),
            values=np.concatenate([s.values for s, _ in parts]),
            wall_time=np.concatenate([s.wall_time for s, _ in parts]),
            warnings=tuple(warnings),
            meta={"event_files": [str(f) for f in g.files + g.extra]},
            context=aliases.Context(format=TENSORBOARD, split=g.split),
        )
    ]


def _read_hf_trainer(g: RunGroup) -> list[RawRun]:
    """The output dir's newest trainer_state.json (its checkpoint copies are older states)."""
    if len(g.files) == 1:
        return [hf_trainer.read(g.files[0])]
    newest, rest = hf_trainer.pick_newest(g.files)
    return [hf_trainer.read(newest, copies=rest)]


def _read_table(g: RunGroup) -> list[RawRun]:
    """A CSV/JSONL file; a generic stem (metrics.csv) takes the run name the grouping gave it,
    and ``stabdiag train``'s ``run.json`` beside a metrics.csv goes into meta."""
    f = g.files[0]
    runs = csv_reader.read(f, name=g.name) if g.fmt == CSV else jsonl.read(f)
    if g.name is not None and len(runs) == 1 and runs[0].name == f.stem:
        runs = [replace(runs[0], name=g.name)]
    if f.name == "metrics.csv":
        run_json = f.parent / "run.json"
        try:
            meta = json.loads(run_json.read_text(encoding="utf-8")) if run_json.is_file() else None
        except (OSError, ValueError):
            meta = None
        if isinstance(meta, dict):
            runs = [replace(r, meta={**meta, **r.meta}) for r in runs]
    return runs


def _stdout_reader(
    name: str, read_file: Callable[[Path], list[RawRun]]
) -> Callable[[RunGroup], list[RawRun]]:
    """A captured-stdout file: one run, or one run with ranks for ``torchrun --tee`` output."""

    def read(g: RunGroup) -> list[RawRun]:
        return launcher.read_tee(g.files[0], name, read_file)

    return read


def _stdout(module) -> Reader:  # noqa: ANN001 - a stdout-format module (FORMAT, looks_like, read)
    return Reader(
        module.FORMAT,
        frozenset({module.FORMAT}),
        _STDOUT_EXAMPLES[module.FORMAT],
        module.looks_like,
        _stdout_reader(module.FORMAT, module.read),
        stdout=module.read,
    )


_STDOUT_EXAMPLES = {
    verl.FORMAT: "*.log with verl console 'step:N - actor/entropy:X - ...' lines",
    megatron.FORMAT: "slurm-*.out, *.log with 'iteration N/ M | ... lm loss: ...' lines",
    deepspeed.FORMAT: "*.out, *.log with '[deepspeed] OVERFLOW! ...' and 'step=N, skipped=K' lines",
    hf_stdout.FORMAT: "*.out, *.log with printed {'loss': ..., 'learning_rate': ...} dicts",
    fairseq.FORMAT: "train.log with '| epoch 001 | loss ... | gnorm ...' or JSON lines",
    nanogpt.FORMAT: "*.log with 'iter N: loss X, time ...' / 'step N: train loss ..., val loss ...'",
    llmc.FORMAT: "main.log with 's:N trl:X lr:Y norm:Z' / 's:N tel:X' (llm.c, modded-nanogpt)",
    torchtitan.FORMAT: "*.log with torchtitan 'step: N loss: X ...' lines",
}

# In sniffing order: the first whose looks_like says yes reads the file. Names and content
# markers that cannot be mistaken come first; plain CSV/JSONL take what is left of their
# suffixes; captured stdout comes last, and among its formats the more specific first
# (verl's "step:N - key:value" logs also print HF-style dicts; Megatron-DeepSpeed logs also hold
# DeepSpeed lines; the DeepSpeed reader reads HF dicts too).
READERS: tuple[Reader, ...] = (
    Reader(
        TENSORBOARD,
        frozenset({TENSORBOARD}),
        "runs/<name>/events.out.tfevents.*",
        _tensorboard,
        _read_tensorboard,
    ),
    Reader(
        HF_TRAINER_STATE,
        frozenset({HF_TRAINER_STATE, JSONL}),
        "output_dir/trainer_state.json, output_dir/checkpoint-*/trainer_state.json",
        hf_trainer.looks_like,
        _read_hf_trainer,
    ),
    Reader(
        MLFLOW,
        frozenset({MLFLOW}),
        "mlruns/<experiment>/<run>/metrics/<key>",
        mlflow.looks_like,
        lambda g: [mlflow.read_run(g.path)],
    ),
    Reader(
        WANDB_OFFLINE,
        frozenset({WANDB_OFFLINE}),
        "wandb/offline-run-*/run-*.wandb (binary history, no wandb package needed)",
        _wandb_offline,
        lambda g: [wandb_offline.read_file(g.files[0])],
    ),
    Reader(
        LIGHTNING_CSV,
        frozenset({LIGHTNING_CSV, CSV}),
        "lightning_logs/version_N/metrics.csv (+ hparams.yaml)",
        lightning.looks_like,
        lambda g: lightning.read(g.files[0]),
    ),
    Reader(
        WANDB_CSV,
        frozenset({WANDB_CSV, CSV}),
        "W&B panel export *.csv (Step, '<run> - <metric>' columns)",
        _wandb_csv,
        lambda g: wandb_csv.read(g.files[0]),
    ),
    Reader(
        CSV,
        frozenset({LIGHTNING_CSV, CSV}),
        "*.csv (wide: step + metric columns; long: step,metric,value)",
        _csv,
        _read_table,
    ),
    Reader(
        JSONL,
        frozenset({JSONL, HF_TRAINER_STATE}),
        "*.jsonl, *.ndjson (one JSON object per line)",
        _jsonl,
        _read_table,
    ),
    *(
        _stdout(m)
        for m in (verl, megatron, deepspeed, hf_stdout, fairseq, nanogpt, llmc, torchtitan)
    ),
)

BY_NAME: Mapping[str, Reader] = {r.name: r for r in READERS}
FORMATS: tuple[str, ...] = tuple(BY_NAME)
STDOUT_FORMATS: tuple[str, ...] = tuple(r.name for r in READERS if r.stdout is not None)
_FILE_READERS = tuple(r for r in READERS if r.stdout is None)
_STDOUT_READERS = tuple(r for r in READERS if r.stdout is not None)


def detect(path: Path) -> str | None:
    """The format of one file (already known not to be a checkpoint), or None.

    Captured stdout is only looked for in text-like files (``.log``, ``.out``, ``.txt``, no
    suffix, ...; not Markdown: a PROVENANCE.md quoting a log line is not that log), and with
    ``torchrun --tee`` rank prefixes stripped first (formats anchored at line start need it)."""
    head = _head(path, HEAD_BYTES)
    for r in _FILE_READERS:
        if r.looks_like(path, head):
            return r.name
    if path.suffix.lower() not in textlog.PLAIN_SUFFIXES:
        return None
    text = head.decode("utf-8", "replace")
    if launcher.tee_ranks(text):
        for size in (HEAD_BYTES, _TEE_DEEP_BYTES):  # the head, then deeper (a long banner)
            inner = launcher.strip_tee(
                text if size == HEAD_BYTES else _head(path, size).decode("utf-8", "replace")
            )
            with textlog.virtual_files({path: inner}):
                found = _first(_STDOUT_READERS, path, inner.encode("utf-8", "replace"))
            if found is not None:
                return found
    if len(head) < HEAD_BYTES:  # the head is the whole file: deep scans need not read it again
        with textlog.whole_file(path, head):
            return _first(_STDOUT_READERS, path, head)
    return _first(_STDOUT_READERS, path, head)


def _first(readers: tuple[Reader, ...], path: Path, head: bytes) -> str | None:
    return next((r.name for r in readers if r.looks_like(path, head)), None)


def _head(path: Path, n: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError:
        return b""


def read(g: RunGroup) -> list[RawRun]:
    """The runs of one planned group, by its format's reader (a torchrun ``--log-dir`` group
    hands each file to the stdout reader of that file's own format)."""
    if g.fmt == launcher.LOG_DIR:
        return [
            launcher.read_log_dir(
                g.path, list(zip(g.files, g.kinds, strict=True)), lambda k: BY_NAME[k].stdout
            )
        ]
    return BY_NAME[g.fmt].read(g)
