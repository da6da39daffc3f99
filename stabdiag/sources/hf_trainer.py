"""HF Transformers ``trainer_state.json``: ``log_history`` entries -> raw series.

Layout facts: research/formats.md section 2.1. Training entries carry ``loss``/``grad_norm``/
``learning_rate`` (custom trainers: ``lr``, pre-prefixed keys, strings); eval entries carry
``eval_*`` keys; the final summary entry (``train_runtime``, run-average ``train_loss``) is not a
per-step metric and goes to ``meta["summary"]``. Python's json accepts the bare NaN/Infinity that
HF writes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from stabdiag.errors import SourceError
from stabdiag.sources.raw import BAD, RawRun, bad_lines_warning, from_rows, parse_number, parse_step

FORMAT = "hf-trainer-state"
FILENAME = "trainer_state.json"
_CHECKPOINT_DIR = re.compile(r"^checkpoint-\d+$")
_SUMMARY_KEYS = frozenset(
    {
        "train_runtime",
        "train_samples_per_second",
        "train_steps_per_second",
        "total_flos",
        "train_loss",
    }
)


# One-line JSON files of a W&B run dir: summaries, never a trainer state or a per-step log.
NOT_LOGS = frozenset({"wandb-summary.json", "wandb-metadata.json"})
_KEY = b'"log_history"'


def looks_like(path: Path, head: bytes) -> bool:
    """``trainer_state.json`` by name, or any other ``.json`` holding a ``log_history`` key (in
    the first 4 KiB, or anywhere in a file up to 64 MiB: HF writes sort_keys, so the key may sit
    past the head)."""
    name = path.name.lower()
    if name == FILENAME:
        return True
    if not name.endswith(".json") or name in NOT_LOGS:
        return False
    return _KEY in head[:4096] or _KEY in _whole(path)


def _whole(path: Path) -> bytes:
    try:
        if path.stat().st_size > 64 << 20:
            return b""
        return path.read_bytes()
    except OSError:
        return b""


def output_dir(path: Path) -> Path:
    """The Trainer output dir a trainer_state.json belongs to (checkpoint-N/ copies included)."""
    return path.parent.parent if _CHECKPOINT_DIR.match(path.parent.name) else path.parent


def load_state(path: Path) -> dict:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # bad JSON, huge ints, deep nesting
        raise SourceError(
            path, "a trainer_state.json (JSON object)", f"unreadable JSON ({exc})"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("log_history"), list):
        raise SourceError(
            path,
            "a trainer_state.json with a log_history list",
            "no log_history" if isinstance(state, dict) else type(state).__name__,
        )
    return state


def read(path: Path, copies: Sequence[Path] = ()) -> RawRun:
    """Read one trainer_state.json; ``copies`` are other states of the same run not used."""
    state = load_state(path)
    rows: list[tuple[int, str, float]] = []
    bad_entries: list[int] = []
    text_keys: set[str] = set()
    summary: dict = {}
    for i, entry in enumerate(state["log_history"]):
        if not isinstance(entry, dict):
            bad_entries.append(i)
            continue
        step = parse_step(entry.get("step"))
        if step is None:
            bad_entries.append(i)
            continue
        if _SUMMARY_KEYS & entry.keys() and "loss" not in entry and "eval_loss" not in entry:
            summary = {k: v for k, v in entry.items()}
            continue
        for key, raw in entry.items():
            if key == "step":
                continue
            v = parse_number(raw)
            if v is None:
                continue
            if v is BAD:
                text_keys.add(key)
                continue
            rows.append((step, key, v))
    warnings = []
    if bad_entries:
        warnings.append(
            bad_lines_warning(str(path), "log_history entries without a step", bad_entries).replace(
                "(line", "(entry"
            )
        )
    if copies:
        warnings.append(
            f"{path}: used this copy (global_step {state.get('global_step')}); "
            f"{len(copies)} other trainer_state.json of the same run ignored: "
            + ", ".join(str(c) for c in copies[:3])
        )
    meta = {k: v for k, v in state.items() if k != "log_history"}
    if summary:
        meta["summary"] = summary
    if text_keys:
        meta["non_numeric_keys"] = sorted(text_keys)
    return from_rows(
        output_dir(path).resolve().name, str(path), FORMAT, rows, warnings=warnings, meta=meta
    )


def pick_newest(paths: Sequence[Path]) -> tuple[Path, list[Path]]:
    """Of several states of one run, the one with the largest global_step (top-level on ties)."""

    def key(p: Path) -> tuple[float, int]:
        try:
            gs = float(json.loads(p.read_text(encoding="utf-8")).get("global_step") or 0)
        except (OSError, ValueError, AttributeError, RecursionError):
            gs = -1.0
        return gs, 0 if _CHECKPOINT_DIR.match(p.parent.name) else 1

    ordered = sorted(paths, key=key, reverse=True)
    return ordered[0], ordered[1:]
