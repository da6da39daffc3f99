"""Which reader a file needs, decided by its name and (a few bytes of) its content.

Checkpoints and other binary artefacts are recognised by name alone and never opened: a
``pytorch_model.bin`` is a pickle, and reading logs must never execute user files.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from stabdiag.sources import (
    deepspeed,
    fairseq,
    hf_stdout,
    launcher,
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
from stabdiag.sources.tabular import STEP_COLUMNS

TENSORBOARD = "tensorboard"
HF_TRAINER_STATE = "hf-trainer-state"
LIGHTNING_CSV = "lightning-csv"
CSV = "csv"
JSONL = "jsonl"
MLFLOW = mlflow.FORMAT
WANDB_CSV = wandb_csv.FORMAT
WANDB_OFFLINE = wandb_offline.FORMAT
# Captured stdout: the first whose content matches wins. Megatron-DeepSpeed logs also hold
# DeepSpeed lines, so Megatron goes first; the DeepSpeed reader reads HF dicts too.
# verl's "step:N - key:value" lines are checked first: its logs also print dicts HF-style.
TEXT_READERS = (verl, megatron, deepspeed, hf_stdout, fairseq, nanogpt, llmc, torchtitan)
TEXT_FORMATS = tuple(m.FORMAT for m in TEXT_READERS)
# Markdown is documentation (a PROVENANCE.md quoting a log line is not that log).
_TEXT_SUFFIXES = textlog.TEXT_SUFFIXES - {".md"}
FORMATS = (TENSORBOARD, HF_TRAINER_STATE, LIGHTNING_CSV, CSV, JSONL, *TEXT_FORMATS, MLFLOW,
           WANDB_CSV, WANDB_OFFLINE)
# Example paths, for `stabdiag formats`.
EXAMPLES = {
    TENSORBOARD: "runs/<name>/events.out.tfevents.*",
    HF_TRAINER_STATE: "output_dir/trainer_state.json, output_dir/checkpoint-*/trainer_state.json",
    LIGHTNING_CSV: "lightning_logs/version_N/metrics.csv (+ hparams.yaml)",
    CSV: "*.csv (wide: step + metric columns; long: step,metric,value)",
    JSONL: "*.jsonl, *.ndjson (one JSON object per line)",
    megatron.FORMAT: "slurm-*.out, *.log with 'iteration N/ M | ... lm loss: ...' lines",
    deepspeed.FORMAT: "*.out, *.log with '[deepspeed] OVERFLOW! ...' and 'step=N, skipped=K' lines",
    hf_stdout.FORMAT: "*.out, *.log with printed {'loss': ..., 'learning_rate': ...} dicts",
    fairseq.FORMAT: "train.log with '| epoch 001 | loss ... | gnorm ...' or JSON lines",
    nanogpt.FORMAT: "*.log with 'iter N: loss X, time ...' / 'step N: train loss ..., val loss ...'",
    llmc.FORMAT: "main.log with 's:N trl:X lr:Y norm:Z' / 's:N tel:X' (llm.c, modded-nanogpt)",
    torchtitan.FORMAT: "*.log with torchtitan 'step: N loss: X ...' lines",
    verl.FORMAT: "*.log with verl console 'step:N - actor/entropy:X - ...' lines",
    MLFLOW: "mlruns/<experiment>/<run>/metrics/<key>",
    WANDB_CSV: "W&B panel export *.csv (Step, '<run> - <metric>' columns)",
    WANDB_OFFLINE: "wandb/offline-run-*/run-*.wandb (binary history, no wandb package needed)",
}

# Never opened: model/optimizer checkpoints, pickles, arrays, archives, media.
SKIP_SUFFIXES = frozenset({
    ".bin", ".pt", ".pth", ".safetensors", ".ckpt", ".pkl", ".pickle", ".joblib", ".h5",
    ".hdf5", ".keras", ".npz", ".npy", ".msgpack", ".onnx", ".gguf", ".pb", ".index",
    ".tar", ".gz", ".zip", ".bz2", ".xz", ".zst", ".7z", ".png", ".jpg", ".jpeg", ".gif",
    ".mp4", ".wav", ".parquet", ".arrow", ".so", ".pyc", ".model",
})
# TF/Keras checkpoint shards carry the marker mid-name (model.ckpt-1000.data-00000-of-00001).
_SKIP_NAME = re.compile(r"\.ckpt-|\.data-\d+-of-\d+")
# With --format forced, a directory walk reads only files of that format's family.
FAMILY = {
    TENSORBOARD: frozenset({TENSORBOARD}),
    HF_TRAINER_STATE: frozenset({HF_TRAINER_STATE, JSONL}),
    LIGHTNING_CSV: frozenset({LIGHTNING_CSV, CSV}),
    CSV: frozenset({LIGHTNING_CSV, CSV}),
    JSONL: frozenset({JSONL, HF_TRAINER_STATE}),
    WANDB_CSV: frozenset({WANDB_CSV, CSV}),
} | {f: frozenset({f}) for f in (*TEXT_FORMATS, MLFLOW, WANDB_OFFLINE)}
_VERSION_DIR = re.compile(r"^version_\d+$")
# One-line JSON files that carry a step key but are summaries, not per-step logs (W&B run dir).
_NOT_LOGS = frozenset({"wandb-summary.json", "wandb-metadata.json"})


def is_skipped(path: Path) -> bool:
    """True for files we must not open (checkpoints, pickles, binaries), by name only."""
    name = path.name.lower()
    if tensorboard.is_event_file(path):
        return False
    return any(name.endswith(s) for s in SKIP_SUFFIXES) or bool(_SKIP_NAME.search(name))


def _head(path: Path, n: int = 4096) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError:
        return b""


def sniff(path: Path) -> str | None:
    """The format of one file, or None when it is not a metrics log we read."""
    if is_skipped(path):
        return None
    name = path.name.lower()
    if tensorboard.is_event_file(path):
        return TENSORBOARD
    if name == "trainer_state.json":
        return HF_TRAINER_STATE
    if mlflow_run(path) is not None:
        return MLFLOW
    if name.endswith(".wandb"):
        return WANDB_OFFLINE if _head(path, 4) == wandb_offline.MAGIC else None
    if name.endswith(".csv"):
        if name == "metrics.csv" and ((path.parent / "hparams.yaml").is_file()
                                      or _VERSION_DIR.match(path.parent.name)):
            return LIGHTNING_CSV
        if wandb_csv.looks_like(path, _head(path).decode("utf-8", "replace")):
            return WANDB_CSV
        return CSV
    if name.endswith((".jsonl", ".ndjson")):
        return JSONL
    if name.endswith(".json"):
        if name in _NOT_LOGS:
            return None
        head = _head(path)
        if b'"log_history"' in head or b'"log_history"' in _tail_key(path):
            return HF_TRAINER_STATE
        return JSONL if _first_line_is_object(head) else None
    if not path.suffix and tensorboard.looks_like_tfrecord(_head(path, 12)):
        return TENSORBOARD
    if path.suffix.lower() in _TEXT_SUFFIXES:
        return sniff_text(path)
    return None


_TEE_DEEP_BYTES = 8 << 20  # how far a prefixed (torchrun --tee) file is searched for metric lines


def sniff_text(path: Path) -> str | None:
    """The stdout-log format of a text file, from its first 64 KiB (and a deeper scan for .out/.log)."""
    head = _head(path, textlog.HEAD_BYTES).decode("utf-8", "replace")
    if launcher.tee_ranks(head):  # torchrun --tee: formats anchored at line start need it stripped
        for size in (textlog.HEAD_BYTES, _TEE_DEEP_BYTES):  # the head, then deeper (a long banner)
            inner = launcher.strip_tee(head if size == textlog.HEAD_BYTES
                                       else _head(path, size).decode("utf-8", "replace"))
            with textlog.virtual_files({path: inner}):
                found = next((m.FORMAT for m in TEXT_READERS if m.looks_like(path, inner[:size])),
                             None)
            if found is not None:
                return found
    return next((m.FORMAT for m in TEXT_READERS if m.looks_like(path, head)), None)


def mlflow_run(path: Path) -> Path | None:
    """The MLflow run directory a metric file belongs to (``<run>/metrics/<key...>``), if any."""
    for parent in path.parents:
        if parent.name == "metrics" and (parent.parent / "meta.yaml").is_file():
            return parent.parent
    return None


def _tail_key(path: Path) -> bytes:
    # trainer_state.json is sort_keys: log_history may sit past the first 4 KiB.
    try:
        if path.stat().st_size > 64 << 20:
            return b""
        return path.read_bytes()
    except OSError:
        return b""


def _first_line_is_object(head: bytes) -> bool:
    """A one-line JSON object with a step key (a plain config.json is not a metrics log)."""
    line = head.split(b"\n", 1)[0].strip()
    if not (line.startswith(b"{") and line.endswith(b"}")) or b"\n" not in head:
        return False
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return False
    return isinstance(obj, dict) and any(k.lower() in STEP_COLUMNS for k in obj)


# Never read while walking: kernel and device trees (a symlink to /proc/self/environ is a secret).
_NEVER_READ = ("/proc", "/sys", "/dev")


def _inside(target: str, roots: tuple[str, ...]) -> bool:
    return any(target == r or target.startswith(r.rstrip("/") + "/") for r in roots) and \
        not any(target == n or target.startswith(n + "/") for n in _NEVER_READ)


def special(path: Path) -> str | None:
    """What an explicitly given path is when it is not something to read: a FIFO, a device, a
    socket, or a file under /proc, /sys or /dev (never read, even when named explicitly)."""
    import stat

    real = os.path.realpath(path)
    if any(real == n or real.startswith(n + "/") for n in _NEVER_READ):
        return f"a path under /{real.split('/')[1]} (never read)"
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    for test, what in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return f"{what}, not a log file"
    return None


def walk(root: Path) -> Iterator[Path]:
    """Every file under ``root`` in sorted order; skips hidden dirs/files and __pycache__,
    follows directory symlinks once (a symlink loop is visited only once). A symlink is followed
    only when its target stays inside ``root`` (a link out of the tree, e.g. to /proc/self/environ
    or ~/.ssh, is not an input the user gave), and only regular files are yielded (no FIFOs,
    devices or sockets)."""
    roots = (os.path.realpath(root),)
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            st = d.stat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for e in entries:
            if e.name.startswith(".") or e.name == "__pycache__":
                continue
            try:
                if e.is_symlink() and not _inside(os.path.realpath(e.path), roots):
                    continue
                if e.is_dir():
                    subdirs.append(Path(e.path))
                elif e.is_file():
                    yield Path(e.path)
            except OSError:
                continue
        stack.extend(reversed(subdirs))
