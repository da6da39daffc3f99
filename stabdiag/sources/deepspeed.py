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

Two engines in one log (DeepSpeed-Chat RLHF: actor and critic, each with its own loss scaler) are
two series families, never one interleaved loss-scale series: engine step lines come in pairs
(same step, actor first); each ``OVERFLOW!`` line goes to the engine whose scale chain its
"Attempted loss scale" continues (its current scale, else the fewest unprinted doublings), and on
a tie to the engine due next in stepping order (actor, then critic). The critic's series are
``critic/loss_scale``, ``critic/skipped_step``, ``critic/lr``; a warning says when the engines'
own skipped counts disagree with the attribution. DeepSpeed-Chat's other lines are read too: PPO
``act_loss``/``cri_loss``/``unsuper_loss`` (as ``rl/loss``, ``rl/value/loss``: a policy objective
and a value loss, never ``train/loss``), ``average reward score`` (``rl/reward``), the step-1
``ppl`` after "Evaluating perplexity" (``val/ppl``, and ``val/loss`` = ln ppl, said in the
mapping) and the step-2 ``chosen_last_scores``/``acc`` evaluation. With PPO lines the step axis is
the printed PPO step (over epochs), and overflow/engine lines belong to the PPO step in progress.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from stabdiag.sources import textlog
from stabdiag.sources.raw import BAD, Lines, RawRun, parse_int, parse_number

FORMAT = "deepspeed"

LOSS_SCALE = "loss scale"
SKIPPED = "skipped_step"

_NUM = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|inf|nan)"
_OVERFLOW = re.compile(
    r"(?:OVERFLOW!|overflow!|Overflow detected\.|Gradient overflow\.)[^\n]{0,200}?Skipping step"
    r"(?:[.,]\s*(?:Attempted loss scale:\s*(?P<att>" + _NUM + r")"
    r"(?:,\s*(?:reducing to\s*(?P<new>" + _NUM + r")|but hysteresis is (?P<hyst>\d+)))?"
    r"|loss scaler \d+ reducing loss scale to\s*(?P<apex>" + _NUM + r")))?"
)
_ENGINE_STEP = re.compile(r"\bstep=(\d+), skipped=(\d+)")
_TQDM = re.compile(r"\|\s*(\d+)/(\d+)\s*\[")
_SNIFF = re.compile(
    rb"(?:OVERFLOW!|overflow!) Rank \d+ Skipping step|\] step=\d+, skipped=\d+"
    rb"|\[deepspeed\]|\[deepscale\]"
)


@dataclass(frozen=True)
class Overflow:
    """One DeepSpeed ``OVERFLOW!`` message: the loss scale it attempted and the one it fell to."""

    attempted: float | None
    new: float | None  # scale after the message; None when only a skip is reported


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


def engine_step(text: str) -> tuple[int, int] | None | object:
    """(step, cumulative skipped) from a DeepSpeed ``log_dist`` step line; ``BAD`` for a step
    line whose numbers no int64 holds (the line is dropped and counted, not the log)."""
    m = _ENGINE_STEP.search(text)
    if not m:
        return None
    step, skipped = parse_int(m[1]), parse_int(m[2])
    return BAD if step is None or skipped is None else (step, skipped)


looks_like = textlog.sniffer(_SNIFF, deep=textlog.TEXT_SUFFIXES)


# --- HF Trainer printed dicts (shared with hf_stdout) -------------------------------------------

_DICT = re.compile(r"\{'[^{}]*\}")
_PAIR = re.compile(r"'([^']+)':\s*('(?:[^'\\]|\\.)*'|\"[^\"]*\"|[^,}]+)")
_LOGGING_STEPS = re.compile(r"\blogging_steps=(\d+)")
_SUMMARY = frozenset(
    {
        "train_runtime",
        "train_samples_per_second",
        "train_steps_per_second",
        "total_flos",
        "train_loss",
    }
)


def parse_dict(text: str) -> dict[str, float | None] | None:
    """One printed Trainer dict -> {key: number}; None if it is not a metrics dict (config
    dumps such as ``{'init_scale': 256, ...}`` are dicts too). Never evaluated as Python."""
    out: dict[str, float | None] = {}
    for key, raw in _PAIR.findall(text):
        v = parse_number(raw.strip().strip("'\""))
        out[key] = None if v is BAD else v  # type: ignore[assignment]
    keys = out.keys()
    if (
        "loss" in keys
        or any(k.startswith("eval_") for k in keys)
        or "train_runtime" in keys
        or {"learning_rate", "epoch"} <= keys
    ):
        return out
    return None


# --- DeepSpeed-Chat (research/formats.md; DeepSpeedExamples applications/DeepSpeed-Chat) --------

# Step 3 (PPO): "epoch: 0|step: 12|ppo_ep: 1|act_loss: 0.11|cri_loss: 0.06|unsuper_loss: 0.0"; later
# releases spell it "Epoch: 0 | Step: 12 | PPO Epoch: 1 | Actor Loss: ... | Critic Loss: ...".
_PPO = re.compile(
    r"^\s*epoch:\s*(\d+)\s*\|\s*step:\s*(\d+)\s*\|\s*(?:ppo_ep|ppo epoch):\s*\d+\s*\|"
    r"(?P<rest>.*)$",
    re.IGNORECASE,
)
_PPO_ANY = re.compile(
    r"(?im)^(?:\s*\[(?:default|rank)\d+\]:)?\s*epoch:\s*\d+\s*\|\s*step:\s*\d+"
    r"\s*\|\s*(?:ppo_ep|ppo epoch):"
)
# The lookahead (a colon within reach) rejects most start positions in one scan: without it a
# long run of words and spaces cost 64 backtracking tries per character (issue 13 D4).
_PPO_FIELD = re.compile(
    r"(?=[A-Za-z_\s]{0,256}:)\s*([A-Za-z_ ]{1,64}?)\s*:\s*(" + _NUM + r")\s*(?:\||$)", re.IGNORECASE
)
# The PPO actor loss is a policy-gradient objective (it can be negative), the critic's a value loss:
# neither is a language-model loss, so they get the RL names the rl-* detectors read (rl_common:
# rl/loss, rl/value/loss, rl/reward), never train/loss. unsuper_loss is the optional pretraining
# (ptx) term, kept under its own name.
PPO_NAMES = {
    "act_loss": "rl/loss",
    "actor loss": "rl/loss",
    "cri_loss": "rl/value/loss",
    "critic loss": "rl/value/loss",
    "unsuper_loss": "rl/unsupervised_loss",
    "unsupervised loss": "rl/unsupervised_loss",
}
_REWARD = re.compile(
    r"^\s*average reward score:\s*(" + _NUM + r")"
    r"(?:\s*\|\s*EMA reward score:\s*(" + _NUM + r"))?",
    re.IGNORECASE,
)
_TOTAL_BATCHES = re.compile(r"Total (?:Generation|Micro) Batches (\d+)")
# Step 1: "***** Evaluating perplexity, Epoch 3/16 *****" then "ppl: 1.93" (the eval loss is exp'ed).
_PPL_HEAD = re.compile(r"Evaluating perplexity, Epoch (\d+)/(\d+)")
_PPL = re.compile(r"^\s*ppl:\s*(" + _NUM + r")(?:,\s*loss:\s*(" + _NUM + r"))?\s*$")
# Step 2: "chosen_last_scores (higher is better) : 2.81, acc (higher is better) : 0.49"
_RM_EVAL = re.compile(
    r"chosen_last_scores \(higher is better\)\s*:\s*(" + _NUM + r")"
    r"(?:,\s*rejected_last_scores \(lower is better\)\s*:\s*(" + _NUM + r"))?"
    r",\s*acc \(higher is better\)\s*:\s*(" + _NUM + r")"
)
_ENGINE_LR = re.compile(r"\blr=\[\s*(" + _NUM + r")")
# Series names the DeepSpeed-Chat lines are written as (already stabdiag's own names: a reader that
# knows what a value is names it; `derived` in meta says how, for `stabdiag series`).
VAL_PPL, VAL_LOSS = "val/ppl", "val/loss"
ENGINE_NAMES = ("actor", "critic")


def _critic(name: str) -> str:
    """The critic engine's copy of a series name: 'critic/loss_scale', 'critic/skipped_step'."""
    return (
        "critic/"
        + {
            LOSS_SCALE: "loss_scale",
            SKIPPED: "skipped_step",
            "skipped (cumulative)": "skipped (cumulative)",
            "lr": "lr",
        }[name]
    )


_RANK_STEP = re.compile(r"\[Rank \d+\] (step=(\d+), skipped=\d+[^\n]*)")


@dataclass(frozen=True)
class _Prescan:
    """What must be known of the whole log before its first line is read for values."""

    logging_steps: int | None
    two_engines: bool
    ppo: bool


def _prescan(pieces: Iterable[str]) -> _Prescan:
    """One streaming pass over the text in pieces of whole lines (none kept): ``logging_steps=N``,
    whether two engines print (see ``_Pairs``) and whether PPO lines appear."""
    logging_steps: int | None = None
    ppo = False
    pairs = _Pairs()
    for text in pieces:
        # the substring test first: the regex (leading \b, no literal prefix) is 20x slower
        if (
            logging_steps is None
            and "logging_steps=" in text
            and (m := _LOGGING_STEPS.search(text)) is not None
        ):
            logging_steps = int(m[1])
        if not ppo and _PPO_ANY.search(text) is not None:
            ppo = True
        pairs.feed(text)
    return _Prescan(logging_steps, pairs.two_engines(), ppo)


class _Pairs:
    """Two DeepSpeed engines print into one log (RLHF actor + critic) when engine step lines come
    in pairs with the same step number but different contents (skipped count or LR). Identical
    repeats are one line printed by several ranks, and a lone pair is a resume that printed the
    same step twice: most printed steps must come in pairs. Fed the text in pieces of whole
    lines; keeps the distinct step numbers only."""

    def __init__(self) -> None:
        self.prev: tuple[int, str] | None = None
        self.pairs = 0
        self.steps: set[int] = set()

    def feed(self, text: str) -> None:
        for m in _RANK_STEP.finditer(text):
            step = parse_int(m[2])
            if step is None:
                continue
            cur = (step, m[1].strip())
            self.steps.add(cur[0])
            if self.prev is not None and cur[0] == self.prev[0] and cur[1] != self.prev[1]:
                self.pairs += 1
                cur = (-1, "")  # a third line of the same step does not pair again
            self.prev = cur

    def two_engines(self) -> bool:
        return self.pairs > 0 and self.pairs >= 0.5 * len(self.steps)


class _Engine:
    """One DeepSpeed engine's loss-scale chain, as far as the log shows it."""

    def __init__(self) -> None:
        self.scale: float | None = None  # scale after the last message we read
        self.step = 0  # its last completed step (engine count)
        self.last_line = -1  # step of its last engine line
        self.overflows = 0  # overflows attributed to it in all

    def could_attempt(self, attempted: float | None) -> int:
        """How well an overflow's attempted scale continues this engine's chain: 100 when it is
        the current scale (or either is unknown), 100 - n when n unprinted doublings (DeepSpeed
        regrows the scale silently) lead to it, -1 when impossible (a scale only falls with an
        overflow message)."""
        if attempted is None or self.scale is None or attempted == self.scale:
            return 100
        if self.scale <= 0 or attempted < self.scale:
            return -1
        n = math.log2(attempted / self.scale)
        return 100 - int(n) if n == int(n) else -1


def _attribute(engines: list[_Engine], ov: Overflow, after: int | None) -> int:
    """Which engine printed an overflow: the one whose scale chain the attempted scale continues;
    on a tie, the order in which the engines step (actor, then critic, each PPO iteration)."""
    fit = [e.could_attempt(ov.attempted) for e in engines]
    best = max(fit)
    cands = [i for i, f in enumerate(fit) if f == best]
    if len(cands) == 1:
        return cands[0]
    nxt = 0 if after is None else (after + 1) % len(engines)
    return nxt if nxt in cands else cands[0]


def read_stdout(path: Path, fmt: str) -> list[RawRun]:
    """Overflow messages, engine step lines, tqdm counters, Trainer dicts and DeepSpeed-Chat
    lines (PPO losses, reward, perplexity, reward-model accuracy), in write order."""
    pre = _prescan(textlog.blocks(path))
    logging_steps = pre.logging_steps
    cols = textlog.Kept()
    warnings: list[str] = []
    meta: dict = {}
    derived: dict[str, str] = {}
    engines = [_Engine(), _Engine()] if pre.two_engines else [_Engine()]
    dual = len(engines) == 2
    ppo_mode = pre.ppo
    ppo_step = -1  # last PPO step printed (global over epochs)
    ppo_offset = 0  # added to the printed per-epoch step
    ppo_last_epoch: int | None = None
    batches: int | None = None
    seg_last: int | None = None  # engine that last acted in the current PPO step
    known = False  # whether engine 0's step came from the log (not just counted)
    n_dicts = 0
    seen_dicts: set[bytes] = set()  # 16-byte digests: a few dozen bytes a dict, not its text
    dup = 0
    mismatch: list[str] = []
    ppl_epoch: int | None = None
    bad = Lines()  # step lines with a number no int64 holds: dropped, counted

    def name(base: str, e: int) -> str:
        return base if e == 0 else _critic(base)

    def at(e: int) -> int:
        """The step a message of engine ``e`` belongs to: the PPO step in progress when the log
        has PPO lines (both engines step inside it), else the engine's own step count."""
        return ppo_step + 1 if ppo_mode else engines[e].step

    log = textlog.TextLog(path)
    for line in log:
        t = line.text
        ov = parse_overflow(t)
        if ov is not None:
            e = _attribute(engines, ov, seg_last) if dual else 0
            eng = engines[e]
            eng.step += 1
            eng.overflows += 1
            seg_last = e
            s = at(e)
            if ov.attempted is not None and ov.attempted != eng.scale and s > 0:
                # the scale this step was attempted at (first sight, or regrown unprinted)
                cols.add(s - 1, name(LOSS_SCALE, e), ov.attempted)
            cols.add(s, name(SKIPPED, e), 1.0)
            if ov.new is not None:
                cols.add(s, name(LOSS_SCALE, e), ov.new)
                eng.scale = ov.new
            elif ov.attempted is not None:
                eng.scale = ov.attempted
            continue
        es = engine_step(t)
        if es is BAD:
            bad.add(line.number)
            continue
        if es is not None:
            k, skipped = es
            e = 1 if dual and k == engines[0].last_line and engines[1].last_line != k else 0
            eng = engines[e]
            # counted overflows may run ahead of the engine; only a smaller engine step than the
            # previous engine step is a real rewind (resume from a checkpoint)
            eng.step = k if k < eng.last_line else max(eng.step, k)
            eng.last_line = k
            if dual and skipped != eng.overflows and not mismatch:
                mismatch.append(
                    f"{path}: at engine step {k} the {ENGINE_NAMES[e]} reports "
                    f"{skipped} skipped steps but {eng.overflows} overflow messages "
                    "were attributed to it; the split between the engines is uncertain"
                )
            if e == 0:
                known = True
            seg_last = e if dual else seg_last
            s = at(e)
            cols.add(s, name("skipped (cumulative)", e), float(skipped))
            lr = _ENGINE_LR.search(t)
            if lr:
                v = parse_number(lr[1])
                if isinstance(v, float):
                    cols.add(s, name("lr", e), v)
            continue
        if (pm := _PPO.match(t)) is not None:
            epoch, local = parse_int(pm[1]), parse_int(pm[2])
            if epoch is None or local is None:
                bad.add(line.number)
                continue
            if ppo_last_epoch is not None and epoch != ppo_last_epoch:
                ppo_offset = (epoch * batches) if batches else ppo_step + 1 - local
            ppo_last_epoch = epoch
            ppo_step = local + ppo_offset
            seg_last = None
            for key, raw in _PPO_FIELD.findall(pm["rest"]):
                canon = PPO_NAMES.get(key.strip().lower())
                v = parse_number(raw)
                if canon and isinstance(v, float):
                    cols.add(ppo_step, canon, v)
                    derived.setdefault(
                        canon,
                        f"DeepSpeed-Chat PPO '{key.strip()}'"
                        + (
                            " (policy-gradient objective, not a language-model loss)"
                            if canon == "rl/loss"
                            else ""
                        ),
                    )
            continue
        if (rm := _REWARD.match(t)) is not None:
            for canon, raw in (("rl/reward", rm[1]), ("rl/reward_ema", rm[2])):
                v = parse_number(raw)
                if isinstance(v, float):
                    cols.add(max(ppo_step, 0), canon, v)
                    derived.setdefault(
                        canon,
                        "DeepSpeed-Chat 'average reward score'"
                        + (" (EMA)" if canon.endswith("ema") else ""),
                    )
            continue
        if (tb := _TOTAL_BATCHES.search(t)) is not None:
            batches = int(tb[1])
            continue
        if (ph := _PPL_HEAD.search(t)) is not None:
            ppl_epoch = int(ph[1])
            continue
        if ppl_epoch is not None and (pp := _PPL.match(t)) is not None:
            v = parse_number(pp[1])
            s = at(0) if not ppo_mode else max(ppo_step, 0)
            if isinstance(v, float):
                cols.add(s, VAL_PPL, v)
                derived[VAL_PPL] = (
                    "DeepSpeed-Chat 'ppl: X' after 'Evaluating perplexity, Epoch E/N'"
                    " (evaluation perplexity)"
                )
                if v > 0:
                    cols.add(s, VAL_LOSS, math.log(v))
                    derived[VAL_LOSS] = (
                        "ln of the DeepSpeed-Chat evaluation perplexity "
                        "('ppl: X'); computed, not printed"
                    )
            ppl_epoch = None
            continue
        if (rv := _RM_EVAL.search(t)) is not None:
            s = at(0) if not ppo_mode else max(ppo_step, 0)
            for canon, raw in (
                ("val/chosen_last_scores", rv[1]),
                ("val/rejected_last_scores", rv[2]),
                ("val/acc", rv[3]),
            ):
                v = parse_number(raw)
                if isinstance(v, float):
                    cols.add(s, canon, v)
                    derived[canon] = f"DeepSpeed-Chat reward-model evaluation '{canon[4:]}'"
            continue
        for tq in _TQDM.finditer(t):
            if (tq_step := parse_int(tq[1])) is not None:
                engines[0].step, known = max(engines[0].step, tq_step), True
        for dm in _DICT.finditer(t):
            d = parse_dict(dm.group(0))
            if d is None:
                continue
            key = hashlib.blake2b(
                " ".join(dm.group(0).split()).encode("utf-8", "surrogatepass"), digest_size=16
            ).digest()
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
                    engines[0].step = n_dicts * (logging_steps or 1)
            for k, v in d.items():
                if v is not None and k not in _SUMMARY:
                    cols.add(engines[0].step, k, v)
    if bad:
        warnings.append(bad.warning(str(path), "lines with an impossible step"))
    warnings += mismatch
    if n_dicts and not known:
        how = (
            f"logging_steps={logging_steps} from the log"
            if logging_steps
            else "the order of the lines (logging_steps not found in the log)"
        )
        warnings.append(f"{path}: HF Trainer lines carry no step; steps reconstructed from {how}")
    if dup:
        warnings.append(f"{path}: {dup} duplicate printed dicts (one per rank) ignored")
    if dual:
        warnings.append(_dual_note(path, cols))
        for base in (LOSS_SCALE, SKIPPED, "skipped (cumulative)", "lr"):
            derived[_critic(base)] = (
                f"DeepSpeed '{base}' of the second engine in the log (the "
                "critic): attributed by its loss-scale chain and step order"
            )
        meta["engines"] = list(ENGINE_NAMES)
    if ppo_mode:
        meta["rl"] = "ppo"
        warnings.append(
            f"{path}: DeepSpeed-Chat PPO log: steps are the printed PPO steps; "
            "act_loss/cri_loss read as rl/loss and rl/value/loss (a policy "
            "objective and a value loss, not a language-model loss)"
        )
    if log.failure:
        warnings.append(log.failure)
    if logging_steps:
        meta["logging_steps"] = logging_steps
    if derived:
        meta["derived"] = derived
    return [cols.build(textlog.run_name(path), str(path), fmt, warnings=warnings, meta=meta)]


def _dual_note(path: Path, cols: textlog.Kept) -> str:
    """Say how the two engines' overflows were told apart, with the counts per engine."""
    n = [
        cols.codes.count(cols.index[k]) if k in cols.index else 0
        for k in (SKIPPED, _critic(SKIPPED))
    ]
    return (
        f"{path}: two DeepSpeed engines (actor, critic) in one log: {n[0]} and {n[1]} overflow "
        "skips attributed by loss-scale chain and stepping order; the critic's series are "
        "critic/loss_scale, critic/skipped_step, critic/lr"
    )


def read(path: Path) -> list[RawRun]:
    return read_stdout(path, FORMAT)
