"""DeepSpeed stdout: fp16 overflow messages and engine step lines -> loss scale + skipped steps.

Layout facts: research/formats.md section 4.2. The messages carry no step number, so each one is
placed at the step *in progress* when it was printed: one past the nearest step information seen
before it (an engine ``[Rank 0] step=N, skipped=K`` line, a tqdm ``N/M`` counter, a Megatron
``iteration N`` line, an HF Trainer dict), and every overflow since then counts as one more step
(a skipped step is still a step for DeepSpeed). Without any step information the first overflow
is step 1. ``reducing to X`` with X equal to the attempted scale (hysteresis) is a skipped step
without a drop; the ``but hysteresis is H`` variant keeps the scale.

HF Trainer stdout is read by the same loop (``hf_stdout`` shares it), because DeepSpeed runs
under the HF Trainer print both kinds of lines into one file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from stabdiag.sources import textlog
from stabdiag.sources.raw import BAD, RawRun, from_rows, parse_number

FORMAT = "deepspeed"

LOSS_SCALE = "loss scale"
SKIPPED = "skipped_step"

_NUM = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|inf|nan)"
_OVERFLOW = re.compile(
    r"(?:OVERFLOW!|overflow!|Overflow detected\.|Gradient overflow\.)[^\n]*?Skipping step"
    r"(?:[.,]\s*(?:Attempted loss scale:\s*(?P<att>" + _NUM + r")"
    r"(?:,\s*(?:reducing to\s*(?P<new>" + _NUM + r")|but hysteresis is (?P<hyst>\d+)))?"
    r"|loss scaler \d+ reducing loss scale to\s*(?P<apex>" + _NUM + r")))?")
_ENGINE_STEP = re.compile(r"\bstep=(\d+), skipped=(\d+)")
_TQDM = re.compile(r"\|\s*(\d+)/(\d+)\s*\[")
_SNIFF = re.compile(rb"(?:OVERFLOW!|overflow!) Rank \d+ Skipping step|\] step=\d+, skipped=\d+"
                    rb"|\[deepspeed\]|\[deepscale\]")


@dataclass(frozen=True)
class Overflow:
    attempted: float | None
    new: float | None        # scale after the message; None when only a skip is reported


def parse_overflow(text: str) -> Overflow | None:
    """The overflow message in one line, or None. Scale values are floats ('256', '128.0')."""
    m = _OVERFLOW.search(text)
    if m is None:
        return None
    att = float(m["att"]) if m["att"] else None
    if m["new"]:
        new: float | None = float(m["new"])
    elif m["apex"]:
        new = float(m["apex"])
    elif m["hyst"]:
        new = att
    else:
        new = None
    return Overflow(att, new)


def engine_step(text: str) -> tuple[int, int] | None:
    """(step, cumulative skipped) from a DeepSpeed ``log_dist`` step line."""
    m = _ENGINE_STEP.search(text)
    return (int(m[1]), int(m[2])) if m else None


def looks_like(path: Path, head: str) -> bool:
    if _SNIFF.search(head.encode("utf-8", "replace")):
        return True
    return path.suffix.lower() in textlog.TEXT_SUFFIXES and textlog.scan(path, _SNIFF)


# --- HF Trainer printed dicts (shared with hf_stdout) -------------------------------------------

_DICT = re.compile(r"\{'[^{}]*\}")
_PAIR = re.compile(r"'([^']+)':\s*('(?:[^'\\]|\\.)*'|\"[^\"]*\"|[^,}]+)")
_LOGGING_STEPS = re.compile(r"\blogging_steps=(\d+)")
_SUMMARY = frozenset({"train_runtime", "train_samples_per_second", "train_steps_per_second",
                      "total_flos", "train_loss"})


def parse_dict(text: str) -> dict[str, float | None] | None:
    """One printed Trainer dict -> {key: number}; None if it is not a metrics dict (config
    dumps such as ``{'init_scale': 256, ...}`` are dicts too). Never evaluated as Python."""
    out: dict[str, float | None] = {}
    for key, raw in _PAIR.findall(text):
        v = parse_number(raw.strip().strip("'\""))
        out[key] = None if v is BAD else v  # type: ignore[assignment]
    keys = out.keys()
    if "loss" in keys or any(k.startswith("eval_") for k in keys) or "train_runtime" in keys \
            or {"learning_rate", "epoch"} <= keys:
        return out
    return None


def read_stdout(path: Path, fmt: str) -> list[RawRun]:
    """Overflow messages, engine step lines, tqdm counters and Trainer dicts, in write order."""
    text = textlog.read_text(path)
    m = _LOGGING_STEPS.search(text)
    logging_steps = int(m[1]) if m else None
    rows: list[tuple[int, str, float]] = []
    warnings: list[str] = []
    meta: dict = {}
    step = 0             # last completed step we know of
    known = False        # whether `step` came from the log (not just counted)
    n_dicts = 0
    seen_dicts: set[str] = set()
    dup = 0
    scale_seen = False
    last_engine = -1
    for line in textlog.lines(text):
        t = line.text
        ov = parse_overflow(t)
        if ov is not None:
            step += 1
            if not scale_seen and ov.attempted is not None:
                rows.append((step - 1, LOSS_SCALE, ov.attempted))
            rows.append((step, SKIPPED, 1.0))
            if ov.new is not None:
                rows.append((step, LOSS_SCALE, ov.new))
                scale_seen = True
            continue
        es = engine_step(t)
        if es is not None:
            # counted overflows may run ahead of the engine; only a smaller engine step than the
            # previous engine step is a real rewind (resume from a checkpoint)
            step = es[0] if es[0] < last_engine else max(step, es[0])
            last_engine, known = es[0], True
            rows.append((step, "skipped (cumulative)", float(es[1])))
            continue
        for tq in _TQDM.finditer(t):
            step, known = max(step, int(tq[1])), True
        for dm in _DICT.finditer(t):
            d = parse_dict(dm.group(0))
            if d is None:
                continue
            key = " ".join(dm.group(0).split())
            if key in seen_dicts:
                dup += 1
                continue
            seen_dicts.add(key)
            if "train_runtime" in d and "loss" not in d:
                meta["summary"] = d
                continue
            is_eval = any(k.startswith("eval_") for k in d) and "loss" not in d
            if not is_eval:
                n_dicts += 1
                if not known:
                    step = n_dicts * (logging_steps or 1)
            for k, v in d.items():
                if v is not None and k not in _SUMMARY:
                    rows.append((step, k, v))
    if n_dicts and not known:
        how = f"logging_steps={logging_steps} from the log" if logging_steps else \
            "the order of the lines (logging_steps not found in the log)"
        warnings.append(f"{path}: HF Trainer lines carry no step; steps reconstructed from {how}")
    if dup:
        warnings.append(f"{path}: {dup} duplicate printed dicts (one per rank) ignored")
    fail = textlog.failure_warning(path, text)
    if fail:
        warnings.append(fail)
    if logging_steps:
        meta["logging_steps"] = logging_steps
    return [from_rows(textlog.run_name(path), str(path), fmt, rows, warnings=warnings, meta=meta)]


def read(path: Path) -> list[RawRun]:
    return read_stdout(path, FORMAT)
