"""Which files form one run, and what each run is called.

One verdict per run (DESIGN.md "Lessons from the peers"), so sniffed files are grouped first:

- TensorBoard: all event files of one directory are one run, in file-name order; HF Trainer's
  nested ``<unix_time>/`` hparams-only dir is folded into its parent run.
- Keras ``<dir>/train/`` + ``<dir>/validation/`` are one training run named ``<dir>``: validation
  series are read as ``validation/<tag>`` (so ``validation/epoch_loss`` becomes ``val/loss``).
- HF output dir: ``trainer_state.json`` of the dir and its ``checkpoint-*/`` copies are one run
  (the copy with the largest global_step is read); a TensorBoard mirror under it is not read.
- A directory with a ``metrics.csv`` and event files (``stabdiag train``'s run dir) is read from
  the CSV only; ``run.json`` beside it goes into meta.
- MLflow: the metric files of one run directory are one run; torchrun ``--log-dir``: every
  rank's stdout/stderr of ``<run>/attempt_N/<rank>/`` is one run.

Run names: the run's own name (event dir, HF output dir, Lightning ``version_N``, CSV/JSONL file
stem or its dir for generic stems like ``metrics``, or the ``run`` column), prefixed with parent
directories (skipping ``runs``, ``lightning_logs`` ...) only as far as needed to be unique.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from stabdiag.safetext import printable
from stabdiag.sources import hf_trainer, launcher, mlflow
from stabdiag.sources.raw import RawRun
from stabdiag.sources.registry import (
    CSV,
    HF_TRAINER_STATE,
    JSONL,
    LIGHTNING_CSV,
    MLFLOW,
    STDOUT_FORMATS,
    TENSORBOARD,
    WANDB_CSV,
    WANDB_OFFLINE,
)

# Directory names that say nothing about a run (skipped when forming run names).
FILLER_DIRS = frozenset({"runs", "lightning_logs", "logs", "tb", "tensorboard"})
# Generic CSV/JSONL file stems: the run is named after the directory instead.
GENERIC_STEMS = frozenset(
    {"metrics", "log", "logs", "history", "progress", "scalars", "train_log", "trainer_log"}
)
VAL_DIRS = ("validation", "valid", "val", "eval")
_TIME_DIR = re.compile(r"^\d+(\.\d+)?$")  # HF Trainer's nested <unix_time>/ hparams-only dir


@dataclass(frozen=True)
class RunGroup:
    """Files that form one run (before reading), and where its name comes from."""

    fmt: str
    files: tuple[Path, ...]
    path: Path  # reported as RunInfo.path
    anchor: Path  # the run name grows from this dir's parts when names collide
    extra: tuple[Path, ...] = ()  # Keras validation/ files merged into a train/ run
    notes: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()  # per-file formats when they may differ (torchrun --log-dir)
    name: str | None = None  # the run name when the file's own stem says nothing (metrics.csv)
    split: str = ""  # "val" for a TensorBoard dir named validation/, eval/, ...
    use_cache: bool = True  # False: parse again, never read or write the parsed-log cache


def plan(files: Sequence[tuple[Path, str]]) -> list[RunGroup]:
    """Group sniffed ``(file, format)`` pairs into runs (see the module docstring)."""
    by_fmt: dict[str, list[Path]] = defaultdict(list)
    for f, k in files:
        by_fmt[k].append(f)
    groups: list[RunGroup] = []

    # HF: one run per output dir, newest state wins; its TensorBoard mirror is the same run.
    hf_dirs: dict[Path, list[Path]] = defaultdict(list)
    for f in by_fmt.pop(HF_TRAINER_STATE, []):
        hf_dirs[hf_trainer.output_dir(f)].append(f)
    for out_dir, states in hf_dirs.items():
        groups.append(RunGroup(HF_TRAINER_STATE, tuple(states), out_dir, out_dir.parent))

    # MLflow: the metric files of one run directory are one run.
    ml_runs: dict[Path, list[Path]] = defaultdict(list)
    for f in by_fmt.pop(MLFLOW, []):
        ml_runs[mlflow.run_of(f) or f.parent].append(f)
    for run_dir, fs in ml_runs.items():
        groups.append(RunGroup(MLFLOW, tuple(fs), run_dir, run_dir.parent))
    # torchrun --log-dir: <run>/attempt_N/<rank>/{stdout,stderr}.log of all ranks are one run.
    launched: dict[Path, list[tuple[Path, str]]] = defaultdict(list)
    for k in STDOUT_FORMATS:
        keep = []
        for f in by_fmt.get(k, []):
            entry = launcher.log_dir_entry(f)
            if entry is None:
                keep.append(f)
            else:
                launched[entry[0]].append((f, k))
        if k in by_fmt:
            by_fmt[k] = keep
    for run_dir, fs in launched.items():
        groups.append(
            RunGroup(
                launcher.LOG_DIR,
                tuple(f for f, _ in fs),
                run_dir,
                run_dir.parent,
                kinds=tuple(k for _, k in fs),
            )
        )
    # Stdout logs and W&B files: one file, one or more runs (ranks, panel-export columns).
    for k in (*STDOUT_FORMATS, WANDB_CSV, WANDB_OFFLINE):
        for f in by_fmt.pop(k, []):
            groups.append(RunGroup(k, (f,), f, f.parent))

    tabular_dirs = {
        f.parent for k in (CSV, LIGHTNING_CSV) for f in by_fmt.get(k, []) if f.name == "metrics.csv"
    }
    for k in (LIGHTNING_CSV, CSV, JSONL):
        for f in by_fmt.pop(k, []):
            generic = f.stem.lower() in GENERIC_STEMS
            named_by_dir = k == LIGHTNING_CSV or generic
            groups.append(
                RunGroup(
                    k,
                    (f,),
                    f,
                    f.parent.parent if named_by_dir else f.parent,
                    name=f.parent.name if generic and k != LIGHTNING_CSV else None,
                )
            )

    tb_dirs: dict[Path, list[Path]] = defaultdict(list)
    for f in by_fmt.pop(TENSORBOARD, []):
        tb_dirs[f.parent].append(f)
    # HF's nested <unix_time>/ dir (hparams only) belongs to the run dir it sits in.
    for d in [d for d in tb_dirs if _TIME_DIR.match(d.name) and d.parent in tb_dirs]:
        tb_dirs[d.parent] += tb_dirs.pop(d)
    for d in list(tb_dirs):
        if d not in tb_dirs:
            continue
        mirror_of = next((h for h in hf_dirs if h in d.parents), None)
        if mirror_of is not None or d in tabular_dirs:
            tb_dirs.pop(d)
            if mirror_of is None and (d / "run.json").is_file():
                continue  # a stabdiag train run: its TensorBoard files mirror metrics.csv by design
            what = "trainer_state.json" if mirror_of is not None else "metrics.csv"
            groups = [
                _note(g, f"TensorBoard files in {d} not read: same run as its {what}")
                if g.path in (mirror_of, d / "metrics.csv")
                else g
                for g in groups
            ]
            continue
        if d.name.lower() == "train":
            val = next((d.parent / v for v in VAL_DIRS if d.parent / v in tb_dirs), None)
            if val is not None:
                groups.append(
                    RunGroup(
                        TENSORBOARD,
                        tuple(tb_dirs[d]),
                        d.parent,
                        d.parent.parent,
                        extra=tuple(tb_dirs.pop(val)),
                        notes=(
                            f"{d.name}/ and {val.name}/ merged into one run; "
                            f"{val.name}/ series are prefixed '{val.name}/'",
                        ),
                        split=_split(d.parent),
                    )
                )
                tb_dirs.pop(d)
                continue
    for d, fs in tb_dirs.items():
        groups.append(RunGroup(TENSORBOARD, tuple(fs), d, d.parent, split=_split(d)))
    return groups


def _split(run_dir: Path) -> str:
    """'val' for a TensorBoard dir of its own named like validation/ (its loss is a val loss)."""
    return "val" if run_dir.name.lower() in VAL_DIRS else ""


def _note(g: RunGroup, note: str) -> RunGroup:
    return replace(g, notes=g.notes + (note,))


def unique_names(raws: Sequence[tuple[RawRun, RunGroup]]) -> list[str]:
    """Each run's base name, prefixed with parent dirs only as far as needed to be unique."""
    chains = []
    dirs: dict[Path, list[str]] = {}  # anchor -> its escaped parents: resolved once per dir
    for raw, g in raws:
        parents = dirs.get(g.anchor)
        if parents is None:
            parts = g.anchor.resolve().parts[1:]
            parents = dirs[g.anchor] = [printable(p) for p in parts if p.lower() not in FILLER_DIRS]
        chains.append([*parents, printable(raw.name)])  # log-derived: escaped
    depth = [1] * len(chains)
    while True:
        names = ["/".join(c[-d:]) for c, d in zip(chains, depth, strict=True)]
        counts: dict[str, int] = defaultdict(int)
        for n in names:
            counts[n] += 1
        clash = [i for i, n in enumerate(names) if counts[n] > 1 and depth[i] < len(chains[i])]
        if not clash:
            break
        for i in clash:
            depth[i] += 1
    # Identical chains (same file read twice, or runs that only differ by nothing): number them.
    seen: dict[str, int] = defaultdict(int)
    out = []
    for n in names:
        seen[n] += 1
        out.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return out
