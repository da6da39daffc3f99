"""The training spine: build everything, then one instrumented step at a time, top to bottom.

Every step records what nanoGPT's loop throws away (aesthetics.md point 15): the global grad norm
before clipping, per-layer grad norms, the loss scale before and after `scaler.update()` (a drop
means the step was skipped for overflow), the update/parameter norm ratio, max attention logit
per layer, output log-Z and activation RMS. The step's scalars are stacked into one device tensor
and the buffer is moved to the host once per `log_interval` steps, so there is no host sync per
metric (or per step, on CUDA).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from stabdiag import __version__
from stabdiag import table as T
from stabdiag.atomic import write_atomic
from stabdiag.errors import TrainError
from stabdiag.train import checkpoint, dist, inject
from stabdiag.train.config import (
    RESTART_FREE,
    TrainConfig,
    available_cores,
    data_index,
    derived_keys,
    parse_skips,
)
from stabdiag.train.data import Corpus, corrupt_batch, get_batch, load_corpus
from stabdiag.train.health import LiveHealth
from stabdiag.train.model import GPT
from stabdiag.train.writers import (
    MultiWriter,
    NullWriter,
    TensorBoardWriter,
    TidyWriter,
    truncate_tidy,
)

if TYPE_CHECKING:
    from stabdiag.train.branch import BranchPlan

Progress = Callable[[int, dict[str, float]], None]
OnFinding = Callable[[dict[str, Any]], None]

# Changing these between an interrupted run and its resume does not change the trajectory.
RESUMABLE_CHANGES = RESTART_FREE | {"out_dir", "run_name", "guard", "guard_level"}

GUARD_SKIPPED = "guard/skipped_step"
"""1.0 on a step whose optimizer update the guard skipped (guard=skip). Not train/skipped_step:
analysis reads that one as the fp16 loss scaler's overflow skips."""

PARAMS_PER_THREAD = 400_000
"""Below this many parameters per thread, more CPU threads cost more in synchronisation than
they gain (measured on the tiny and small presets: see benchmarks/bench_train.py)."""


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or interrupted) run produced."""

    run_dir: Path
    steps_done: int
    final_loss: float
    final_val_loss: float
    interrupted: bool
    stop_reason: str
    """'completed', 'interrupted', 'nonfinite' or 'guard' (guard=stop acted on a finding)."""
    injected: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    stop_signal: str | None = None
    """'SIGINT' or 'SIGTERM' when an interrupt stopped the run (Ctrl-C counts as SIGINT)."""
    checkpoint: Path | None = None
    """The checkpoint a `resume` continues from (None if the run has none)."""
    rank: int = 0
    """This process's rank under torchrun: only rank 0 should print or analyze."""
    note: str = ""
    """Something the user should be told (e.g. a resume that found the run already finished)."""
    threads: int = 0
    """CPU threads the run used."""
    guard: dict[str, Any] | None = None
    """What the in-loop guard saw and did (as in run.json's "guard"); None when guard=off."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def exit_code(self) -> int:
        """What a CLI should exit with: 128 + the signal number after a signal, else 0."""
        return 128 + signal.Signals[self.stop_signal].value if self.stop_signal else 0


# ----------------------------------------------------------------------------- schedule


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warmup to cfg.lr, then constant / cosine / linear decay to cfg.min_lr."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.decay == "constant":
        return cfg.lr
    frac = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    coeff = 0.5 * (1 + math.cos(math.pi * frac)) if cfg.decay == "cosine" else 1 - frac
    return cfg.min_lr + coeff * (cfg.lr - cfg.min_lr)


def seq_len_at(cfg: TrainConfig, step: int) -> int:
    """Sequence-length warmup: 8 -> block_size linearly, in multiples of 8."""
    if cfg.seq_warmup_steps <= 0 or step >= cfg.seq_warmup_steps:
        return cfg.block_size
    grown = 8 + (cfg.block_size - 8) * step / cfg.seq_warmup_steps
    return max(8, min(cfg.block_size, int(grown) // 8 * 8))


# ----------------------------------------------------------------------------- setup


def pick_device(cfg: TrainConfig, info: dist.DistInfo) -> torch.device:
    want = cfg.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda":
        if not torch.cuda.is_available():
            raise TrainError("device=cuda but no CUDA device is available; use device=cpu or auto")
        torch.cuda.set_device(info.local_rank)
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


def autocast_for(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if cfg.precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if cfg.precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def build_optimizer(model: GPT, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; no weight decay on norm gains and biases (1-d), nor on embeddings unless asked."""
    embed = {id(model.wte.weight), id(model.wpe.weight)}
    decay, no_decay = [], []
    for p in model.parameters():
        skip = p.dim() < 2 or (id(p) in embed and not cfg.decay_embeddings)
        (no_decay if skip else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=device.type == "cuda"
    )


def run_dir_for(cfg: TrainConfig, resume: bool) -> Path:
    """`<out_dir>/<run_name>`; a default name gets a numeric suffix rather than overwrite a run."""
    out = Path(cfg.out_dir)
    if cfg.run_name:
        return out / cfg.run_name
    base = f"{cfg.preset or 'run'}-{cfg.recipe or 'custom'}"
    taken = [p for p in [out / base, *sorted(out.glob(f"{base}-*"))] if p.is_dir()]
    if resume:
        if not taken:
            raise TrainError(f"{out / base}: expected a run directory to resume, found none")
        return max(taken, key=lambda p: p.stat().st_mtime)
    return out / base if not taken else out / f"{base}-{len(taken) + 1}"


@dataclass
class Probes:
    """Metric names in the order of one step's stacked tensor (host-side values kept apart)."""

    names: list[str]

    @classmethod
    def for_model(cls, model: GPT, fp16: bool, guard_skip: bool = False) -> Probes:
        layers = [f"block{i}" for i in range(model.cfg.n_layer)]
        names = [
            T.TRAIN_LOSS,
            T.GRAD_NORM,
            T.UPDATE_RATIO,
            T.PARAM_NORM,
            T.MAX_ATTN_LOGIT,
            T.OUTPUT_LOGZ,
        ]
        names += [T.GRAD_NORM_PREFIX + g for g in model.layer_groups()]
        names += [f"{T.MAX_ATTN_LOGIT}/{name}" for name in layers]
        names += [
            f"{T.MAX_ATTN_LOGIT}/{name}/head{h}" for name in layers for h in range(model.cfg.n_head)
        ]
        names += [T.ACT_RMS_PREFIX + name for name in layers]
        if fp16:
            names += [T.LOSS_SCALE, T.SKIPPED_STEP]
        if guard_skip:
            names += [GUARD_SKIPPED]
        return cls(names)


# ----------------------------------------------------------------------------- the run


def train(
    cfg: TrainConfig,
    *,
    progress: Progress | None = None,
    resume: bool = False,
    restart: bool = False,
    branch: BranchPlan | None = None,
    on_finding: OnFinding | None = None,
) -> TrainResult:
    """Train cfg's model, writing a run directory; Ctrl-C stops cleanly with a checkpoint.

    `resume` continues the run directory from its latest checkpoint (from step 0 if it was
    stopped before its first one); `restart` discards a previous run in that directory first;
    `branch` (see stabdiag.train.branch) starts a new run from another run's checkpoint.
    `on_finding` gets each finding of the guard (cfg.guard) once, as a dict, on rank 0 only."""
    if sum((resume, restart, branch is not None)) > 1:
        raise TrainError("resume, restart and branch exclude each other")
    check_torch_version(torch.__version__)
    info = dist.setup(
        "cuda"
        if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
        else "cpu"
    )
    before = torch.get_num_threads()
    try:
        return _train(cfg, info, progress, resume, restart, branch, on_finding)
    finally:
        torch.set_num_threads(before)
        dist.teardown(info)


TORCH_FLOOR = (2, 6)
"""torch.nn.utils.clip_grads_with_norm_ arrived in 2.6 (F.rms_norm in 2.4, GradScaler(device)
in 2.3); pyproject's `train` extra declares the same floor."""


def check_torch_version(version: str) -> None:
    """TrainError on a torch older than TORCH_FLOOR, rather than an AttributeError mid-step."""
    try:
        found = tuple(int(part) for part in version.split("+")[0].split(".")[:2])
    except ValueError:
        return  # a development build: let it try
    if found < TORCH_FLOOR:
        floor = ".".join(map(str, TORCH_FLOOR))
        raise TrainError(
            f"stabdiag train needs torch>={floor}, found {version}: pip install 'torch>={floor}'"
        )


def choose_threads(
    cfg: TrainConfig, num_params: int, info: dist.DistInfo, device: torch.device
) -> int:
    """CPU threads for this rank (see TrainConfig.threads). Small models lose to threading
    overhead, and on a loaded machine spinning threads wait on each other; so one thread per
    PARAMS_PER_THREAD parameters, within this rank's share of the cores and torch's setting."""
    if device.type != "cpu":
        return torch.get_num_threads()
    if cfg.threads:
        return cfg.threads
    local = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size if info.enabled else 1))
    share = max(1, available_cores() // max(1, local))
    want = max(1, round(num_params / PARAMS_PER_THREAD))
    return max(1, min(want, share, torch.get_num_threads()))


def _train(
    cfg: TrainConfig,
    info: dist.DistInfo,
    progress: Progress | None,
    resume: bool,
    restart: bool,
    branch: BranchPlan | None,
    on_finding: OnFinding | None = None,
) -> TrainResult:
    if cfg.guard == "skip" and info.enabled:
        raise TrainError(
            "guard=skip runs in a single process only: under torchrun each rank sees its own "
            "loss, and the ranks would have to agree on every skip; use guard=stop or warn"
        )
    device = pick_device(cfg, info)
    run_dir = run_dir_for(cfg, resume)
    if resume:
        cfg = _check_resume_config(run_dir, cfg)
    events = _effective(inject.parse_events(cfg.inject), cfg)
    if info.is_main:  # preflight: fail now, not when the first checkpoint is due
        check_writable(run_dir)
    torch.manual_seed(cfg.seed)  # identical init on every rank
    model = GPT(cfg)  # on the CPU first: cheap next to loading the corpus
    threads = choose_threads(cfg, sum(p.numel() for p in model.parameters()), info, device)
    torch.set_num_threads(threads)
    if info.is_main:
        check_disk_space(cfg, run_dir, model)
    ckpt_dir = run_dir / "checkpoints"
    state: dict[str, Any] | None = None
    meta: dict[str, Any] = {}
    note = ""
    if resume:
        meta = _read_json(run_dir / "run.json")
        if (ckpt_dir / checkpoint.LATEST).exists():
            state = checkpoint.load(ckpt_dir, device)
            if int(state["step"]) >= cfg.steps:  # nothing to do: leave the finished run as it is
                return _already_finished(cfg, run_dir, meta, int(state["step"]), info, threads)
        else:
            note = (
                f"{run_dir}: no checkpoint was written before the run stopped; "
                "starting over from step 0"
            )
    elif restart:
        _discard_run(run_dir)
    elif (run_dir / "metrics.csv").exists():
        raise TrainError(_taken_message(run_dir, branch is not None))
    if branch is not None:
        state = checkpoint.load(branch.checkpoint, device)
        if int(state["step"]) != branch.step:
            raise TrainError(
                f"{branch.checkpoint}: expected the checkpoint of step {branch.step}, "
                f"found step {state['step']}"
            )
    model = model.to(device)
    corpus = load_corpus(cfg.data, cfg.data_max_bytes, cfg.seed)  # own RNG: init is unchanged
    optimizer = build_optimizer(model, cfg, device)
    fp16 = cfg.precision == "fp16"
    scaler = torch.amp.GradScaler(
        device.type,
        init_scale=cfg.loss_scale_init,
        growth_interval=cfg.loss_scale_growth_interval,
        enabled=fp16,
    )
    start = 0
    if state is not None:
        saved = state.get("config") or {}
        fresh = branch is not None and any(
            saved.get(k) != getattr(cfg, k) for k in ("precision", "loss_scale_init")
        )
        start = checkpoint.restore(
            state,
            model=model,
            optimizer=optimizer,
            scaler=scaler,
            fresh_scaler=fresh,
            hyper={
                "betas": (cfg.beta1, cfg.beta2),
                "eps": cfg.eps,
                "weight_decay": (cfg.weight_decay, 0.0),
                "growth_interval": cfg.loss_scale_growth_interval,
            },
        )
    if resume:
        meta.setdefault("resumed_at", []).append(start)
    ddp = (
        torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
        if info.enabled
        else model
    )

    writer = NullWriter()
    health = LiveHealth()
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _clean_stale(run_dir)
        write_atomic(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
        if resume:  # steps a killed session logged after its checkpoint would be logged twice
            health.add_rows(truncate_tidy(run_dir / "metrics.csv", start))
            if start == 0:
                for old in run_dir.glob("events.out.tfevents.*"):
                    old.unlink()
        if branch is not None:
            health.add_rows(
                _copy_history(branch.parent_dir / "metrics.csv", run_dir / "metrics.csv", start)
            )
            meta["parent"] = branch.to_dict()
        meta.update(_metadata(cfg, device, info, corpus, model, events, threads))
        _write_json(run_dir / "run.json", meta)
        writer = MultiWriter(
            [
                TidyWriter(run_dir / "metrics.csv", with_rank=info.enabled),
                *([TensorBoardWriter(run_dir)] if cfg.tensorboard else []),
            ]
        )

    loop = _Loop(
        cfg,
        info,
        device,
        corpus,
        model,
        ddp,
        optimizer,
        scaler,
        events,
        writer,
        progress,
        run_dir,
        health=health,
        meta=meta,
        on_finding=on_finding,
    )
    with _stop_on_signals(loop):  # covers the final save too: a SIGTERM there must not kill it
        loop.run(start)
        guard = loop.close_guard()
        if info.is_main:
            if not loop.torn:  # a step cut mid-update would save a state no step produced
                loop.save_checkpoint()
            writer.close()
            meta.update(
                steps_done=loop.step,
                stop_reason=loop.stop_reason,
                stop_signal=loop.stop_signal if loop.interrupted else None,
                final_loss=loop.last_loss,
                final_val_loss=loop.last_val,
                finished=_now(),
            )
            if guard is not None:
                meta["guard"] = guard
            _write_json(run_dir / "run.json", meta)
    stopped_by = loop.stop_signal if loop.interrupted else None
    latest = ckpt_dir / checkpoint.LATEST
    return TrainResult(
        run_dir=run_dir,
        steps_done=loop.step,
        final_loss=loop.last_loss,
        final_val_loss=loop.last_val,
        interrupted=loop.interrupted,
        stop_reason=loop.stop_reason,
        injected=tuple(e.to_dict() for e in events),
        stop_signal=stopped_by,
        checkpoint=latest if latest.exists() else None,
        rank=info.rank,
        note=note,
        threads=threads,
        guard=guard,
    )


def _effective(
    events: tuple[inject.InjectEvent, ...], cfg: TrainConfig
) -> tuple[inject.InjectEvent, ...]:
    """The events that happen: a bad batch whose every data index is skipped never does."""
    skips = parse_skips(cfg.skip_batches)
    if not skips:
        return events
    used = {data_index(s, skips) for s in range(cfg.steps)}
    return tuple(
        e
        for e in events
        if e.kind != "bad_batch" or any(i in used for i in range(e.step, e.last_step + 1))
    )


def _already_finished(
    cfg: TrainConfig,
    run_dir: Path,
    meta: dict[str, Any],
    done: int,
    info: dist.DistInfo,
    threads: int,
) -> TrainResult:
    """`--resume` of a run whose checkpoint is at (or past) its last step: nothing is trained
    and nothing is rewritten (run.json keeps its final losses)."""

    def num(key: str) -> float:
        v = meta.get(key)
        return float(v) if isinstance(v, (int, float)) else float("nan")

    return TrainResult(
        run_dir=run_dir,
        steps_done=done,
        final_loss=num("final_loss"),
        final_val_loss=num("final_val_loss"),
        interrupted=False,
        stop_reason="completed",
        injected=tuple(meta.get("injected") or ()),
        checkpoint=run_dir / "checkpoints" / checkpoint.LATEST,
        rank=info.rank,
        note=f"{run_dir}: already finished at step {done} (steps={cfg.steps}); nothing to "
        "train. Raise --steps to continue it",
        threads=threads,
    )


def _taken_message(run_dir: Path, branching: bool) -> str:
    if branching:
        return f"{run_dir}: a run already exists there; pick another --name"
    ckpts = checkpoint.available(run_dir / "checkpoints")
    how = (
        f"--resume continues it from step {ckpts[-1][0]}"
        if ckpts
        else "it stopped before its first checkpoint, so --resume starts it over from step 0"
    )
    return (
        f"{run_dir}: a run already exists there; {how}, --restart discards it, or give a new --name"
    )


def _discard_run(run_dir: Path) -> None:
    """Remove a previous stabdiag run's files (only a directory that is one)."""
    if not run_dir.exists():
        return
    if not ((run_dir / "config.json").is_file() or (run_dir / "run.json").is_file()):
        raise TrainError(
            f"{run_dir}: --restart expected a stabdiag run directory (config.json, "
            "run.json), found neither; not deleting it"
        )
    for name in ("metrics.csv", "run.json", "config.json"):
        with contextlib.suppress(FileNotFoundError):
            (run_dir / name).unlink()
    for old in run_dir.glob("events.out.tfevents.*"):
        old.unlink()
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)


def _clean_stale(run_dir: Path) -> None:
    """Temp files a killed session left (a checkpoint or the tidy table half written)."""
    for stale in [*run_dir.glob("checkpoints/*.tmp"), run_dir / "metrics.csv.tmp"]:
        with contextlib.suppress(OSError):
            stale.unlink()


def _copy_history(src: Path, dst: Path, before: int) -> list[list[str]]:
    """A branch's metrics.csv starts with its parent's rows before the branch step, so the
    branch reads as a whole run (analysis has its history, curves start at 0)."""
    if not src.exists():
        return []
    shutil.copyfile(src, dst)
    return truncate_tidy(dst, before)


class _Loop:
    """State of one run's loop; `run` reads top to bottom, one helper per phase."""

    def __init__(
        self,
        cfg,
        info,
        device,
        corpus,
        model,
        ddp,
        optimizer,
        scaler,
        events,
        writer,
        progress,
        run_dir,
        *,
        health: LiveHealth | None = None,
        meta: dict[str, Any] | None = None,
        on_finding: OnFinding | None = None,
    ) -> None:
        self.cfg, self.info, self.device, self.corpus = cfg, info, device, corpus
        self.skips = parse_skips(cfg.skip_batches)
        self.health = health if health is not None else LiveHealth()
        self.meta = meta if meta is not None else {}
        pin = self.meta.get("healthy_checkpoint") or {}
        self.pinned: int | None = pin.get("step")
        self.model, self.ddp, self.optimizer, self.scaler = model, ddp, optimizer, scaler
        self.events, self.writer, self.progress, self.run_dir = events, writer, progress, run_dir
        self.params = [p for p in model.parameters() if p.requires_grad]
        groups = model.layer_groups()
        index = {id(p): i for i, ps in enumerate(groups.values()) for p in ps}
        self.group_of = torch.tensor([index[id(p)] for p in self.params], device=device)  # (P,)
        self.num_groups = len(groups)
        self.head_group = list(groups).index("head")
        self.probes = Probes.for_model(model, cfg.precision == "fp16", cfg.guard == "skip")
        self.autocast = autocast_for(cfg, device)
        self.step = 0
        self.stop_requested = False
        self.stop_reason = "completed"
        self.stop_signal: str | None = None  # set by _stop_on_signals
        self.in_step = False
        self.torn = (
            False  # a hard interrupt landed inside a step: model/optimizer may be half-updated
        )
        self.last_loss = float("nan")
        self.last_val = float("nan")
        self.nonfinite_run = 0
        self.buffer: list[torch.Tensor] = []  # one (M,) tensor per step since the last flush
        self.host: list[tuple[int, float, float, int]] = []  # (step, lr, wall_time, tokens)
        self.t_flush = time.perf_counter()
        self.on_finding = on_finding
        self.guard_findings: list[dict[str, Any]] = []
        self._guard_seen: set[tuple[str, int | None]] = set()
        self.guard = self._make_guard()

    def run(self, start: int) -> None:
        self.step = start
        self.t_flush = time.perf_counter()
        try:
            while self.step < self.cfg.steps and not self._should_stop():
                self.in_step = True
                row = self.train_step(self.step)
                self.buffer.append(row)
                self.step += 1
                self.in_step = False
                if self.step % self.cfg.log_interval == 0 or self.step == self.cfg.steps:
                    self.flush()
                if self.step % self.cfg.eval_interval == 0 or self.step == self.cfg.steps:
                    self.evaluate()
                    self.t_flush = time.perf_counter()  # tokens/s counts training time only
                if (
                    self.cfg.checkpoint_interval
                    and self.step % self.cfg.checkpoint_interval == 0
                    and self.step < self.cfg.steps
                ):
                    self.flush()  # on every rank: the gather is a collective
                    if self.info.is_main:
                        self.save_checkpoint()
                    self.t_flush = time.perf_counter()
        except KeyboardInterrupt:  # raised outside a step boundary: the step in flight is lost
            self.stop_reason = "interrupted"
            self.stop_signal = self.stop_signal or "SIGINT"
            self.torn = self.in_step
            del self.host[len(self.buffer) :]  # the lost step's host-side record, if it got one
        self.flush()
        if self.stop_requested and self.stop_reason == "completed" and self.step < self.cfg.steps:
            self.stop_reason = "interrupted"
            self.stop_signal = self.stop_signal or "SIGINT"
        if self.stop_reason != "interrupted":  # e.g. a signal after the last step: it completed
            self.stop_signal = None

    @property
    def interrupted(self) -> bool:
        return self.stop_reason == "interrupted"

    # --- the guard (cfg.guard) ------------------------------------------------------------------

    def _make_guard(self) -> Any:
        """The live Monitor, on every rank: under torchrun each rank feeds it rank 0's rows (the
        gather gives every rank all of them), so all ranks reach the same stop at the same step
        with no extra collective; only rank 0 reports."""
        if self.cfg.guard == "off":
            return None
        from stabdiag.live.monitor import Monitor

        # No out_dir: a findings file in the run directory would be read as another run's log;
        # the findings go to run.json instead.
        return Monitor(
            self.run_dir.name,
            action=self.cfg.guard,
            level=self.cfg.guard_level,
            on_finding=self._guard_event,
        )

    def _guard_event(self, event: Any) -> None:
        """A new or escalated finding: report each one at or above the level once."""
        f = event.finding
        key = (f.kind, f.step_start)
        if f.severity < self.guard.level or key in self._guard_seen:
            return
        self._guard_seen.add(key)
        record = {**f.to_dict(), "seen_at_step": self.step}
        self.guard_findings.append(record)
        if self.info.is_main:
            self.meta["guard"] = self.guard_record()
            _write_json(self.run_dir / "run.json", self.meta)  # there even if the run dies later
            if self.on_finding is not None:
                self.on_finding(record)

    def _guard_feed(self, steps: list[tuple[int, dict[str, float]]]) -> None:
        """Hand one log interval's host values (rank 0's, as ``flush`` wrote them) to the guard,
        one step at a time in step order, so a spike is judged when its step arrives, as a
        per-step guard would."""
        m = self.guard
        if self.cfg.guard == "skip":  # loss, grad norm and LR went in before each update
            if T.LOSS_SCALE in self.probes.names:
                at = [step for step, _ in steps]
                m.log_series(T.LOSS_SCALE, at, [x[T.LOSS_SCALE] for _, x in steps])
                m.log_series(T.SKIPPED_STEP, at, [x[T.SKIPPED_STEP] for _, x in steps])
            return
        for step, x in steps:
            m.log(
                step,
                loss=x[T.TRAIN_LOSS],
                grad_norm=x[T.GRAD_NORM],
                lr=x[T.LR],
                loss_scale=x.get(T.LOSS_SCALE),
                skipped=x.get(T.SKIPPED_STEP),
            )
        if (
            m.should_stop
            and not self.stop_requested
            and self.stop_reason == "completed"
            and self.step < self.cfg.steps
        ):
            self.stop_requested, self.stop_reason = True, "guard"

    def guard_record(self) -> dict[str, Any]:
        """run.json's "guard": the action, the findings reported, what was skipped or stopped."""
        m = self.guard
        return {
            "action": self.cfg.guard,
            "level": self.cfg.guard_level,
            "findings": list(self.guard_findings),
            "skipped_steps": list(m.skipped_steps),
            "stopped_by": m.stop_finding.to_dict() if self.stop_reason == "guard" else None,
            "stopped_at_step": self.step if self.stop_reason == "guard" else None,
            "checks": m.checks,
            "check_seconds": round(m.check_seconds, 4),
        }

    def close_guard(self) -> dict[str, Any] | None:
        """The guard's final check on the whole run, then its record (None when guard=off)."""
        if self.guard is None:
            return None
        self.guard.close()
        return self.guard_record()

    def save_checkpoint(self) -> None:
        """Save this step's checkpoint, look at the run's health, then rotate old checkpoints:
        the last one before the first warning-or-worse finding is pinned and never rotated."""
        ckpt_dir = self.run_dir / "checkpoints"
        checkpoint.save(
            ckpt_dir,
            model=self.model,
            optimizer=self.optimizer,
            scaler=self.scaler,
            step=self.step,
            config=self.cfg.to_dict(),
            data={
                "next_index": data_index(self.step, self.skips),
                "skip_batches": list(self.cfg.skip_batches),
                "seed": self.cfg.seed,
                "batches": "a pure function of (seed, data index, rank)",
            },
        )
        trouble = self.health.check()
        if trouble is not None and self.pinned is None:
            before = [s for s, _ in checkpoint.available(ckpt_dir) if s < trouble.step_start]
            if before:
                self.pinned = before[-1]
                self.meta["healthy_checkpoint"] = {
                    "step": self.pinned,
                    "path": str(checkpoint.step_file(ckpt_dir, self.pinned)),
                    "first_finding": {
                        "kind": trouble.kind,
                        "severity": trouble.severity.name.lower(),
                        "step": trouble.step_start,
                    },
                }
                _write_json(self.run_dir / "run.json", self.meta)
        checkpoint.rotate(
            ckpt_dir, self.cfg.keep_checkpoints, {self.pinned} if self.pinned is not None else set()
        )

    def _should_stop(self) -> bool:
        if self.info.enabled:  # all ranks must agree; only check where they sync anyway
            if self.step % self.cfg.log_interval:
                return False
            self.stop_requested = dist.any_rank(self.info, self.stop_requested, self.device)
        return self.stop_requested

    # --- one step -------------------------------------------------------------------------

    def train_step(self, step: int) -> torch.Tensor:
        cfg = self.cfg
        index = data_index(step, self.skips)  # the step-th batch not skipped
        x, y = get_batch(
            self.corpus.train,
            cfg.batch_size,
            seq_len_at(cfg, step),
            seed=cfg.seed,
            step=index,
            rank=self.info.rank,
        )
        if bad := inject.bad_batch(self.events, index, self.info.rank):
            x, y = corrupt_batch(x, y, bad, seed=cfg.seed, step=index)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        lr = lr_at(cfg, step) * inject.lr_factor(self.events, step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

        with self.autocast:
            loss, stats = self.ddp(x, y, z_loss=cfg.z_loss, probe=True)
        # grad_scale injection scales the backward, so fp16 grads overflow as in a real blow-up
        self.scaler.scale(loss * inject.grad_factor(self.events, step)).backward()
        self.scaler.unscale_(self.optimizer)  # no-op unless fp16: norms below are true norms

        grads = [p.grad for p in self.params]
        sq = torch.stack(torch._foreach_norm(grads)).float().pow(2)  # (P,)
        grad_norm = sq.sum().sqrt()  # global L2 norm before clipping
        layer_sq = torch.zeros(self.num_groups, device=self.device).index_add_(
            0, self.group_of, sq
        )  # (G,)
        if self.model.head_grad_sq is not None:  # tied: the output projection's share
            head_sq = self.model.head_grad_sq
            if self.scaler.is_enabled():
                head_sq = head_sq / self.scaler._get_scale_async().float().pow(2)
            layer_sq[self.head_group] += head_sq
            self.model.head_grad_sq = None
        layer_norms = layer_sq.sqrt()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grads_with_norm_(self.params, cfg.grad_clip, grad_norm)
        skip = False
        if cfg.guard == "skip":  # the one host sync per step that guard=skip costs
            loss_now, norm_now = torch.stack([stats["ce"].detach().float(), grad_norm]).tolist()
            skip = self.guard.log(step, loss=loss_now, grad_norm=norm_now, lr=lr).skip

        before = [p.detach().clone() for p in self.params]
        scale = (
            self.scaler._get_scale_async().detach().clone() if self.scaler.is_enabled() else None
        )
        if not skip:
            self.scaler.step(self.optimizer)  # skipped if the unscale found inf/nan (fp16)
        self.scaler.update()  # also after a guard skip: it ends the step's unscale_ record
        self.optimizer.zero_grad(set_to_none=True)

        deltas = torch._foreach_sub([p.detach() for p in self.params], before)
        update_norm = torch.stack(torch._foreach_norm(deltas)).pow(2).sum().sqrt()
        param_norm = torch.stack(torch._foreach_norm(self.params)).pow(2).sum().sqrt()
        zmax = stats["attn_logit_max"]  # (L, nh)
        parts = [
            stats["ce"],
            grad_norm,
            update_norm / param_norm,
            param_norm,
            zmax.max(),
            stats["logz"],
            layer_norms,
            zmax.amax(dim=1),
            zmax,
            stats["act_rms"],
        ]
        if scale is not None:  # a drop of the scale in update() means this step was skipped
            skipped = (self.scaler._get_scale_async() < scale).float()
            parts += [scale, skipped]
        if cfg.guard == "skip":
            parts.append(torch.tensor(float(skip), device=self.device))
        self.host.append((step, lr, time.time(), x.numel()))
        return torch.cat([p.detach().float().reshape(-1) for p in parts])  # (M,)

    # --- host side: metrics, evaluation -----------------------------------------------------

    def flush(self) -> None:
        """Move the buffered steps to the host in one transfer and hand them to the writers."""
        if not self.buffer:
            return
        rows_by_rank = dist.gather_rows(self.info, torch.stack(self.buffer))  # [(k, M)] per rank
        now = time.perf_counter()
        tokens = sum(h[3] for h in self.host) * self.info.world_size
        tokens_per_s = tokens / max(now - self.t_flush, 1e-9)
        self.t_flush = now
        first_rank: list[tuple[int, dict[str, float]]] = []  # rank 0's steps, for the guard
        for rank, rows in enumerate(rows_by_rank):
            for (step, lr, wall, _), row in zip(self.host, rows.tolist(), strict=True):
                metrics = dict(zip(self.probes.names, row, strict=True))
                metrics[T.LR] = lr
                if step == self.host[-1][0]:
                    metrics[T.TOKENS_PER_S] = tokens_per_s
                self.writer.write(step, metrics, wall, rank if self.info.enabled else None)
                if rank == 0:
                    first_rank.append((step, metrics))
                    if self.info.is_main:
                        self.health.add(step, metrics)
        self.writer.flush()
        if self.guard is not None:
            self._guard_feed(first_rank)
        last = dict(zip(self.probes.names, rows_by_rank[self.info.rank][-1].tolist(), strict=True))
        self.last_loss = last[T.TRAIN_LOSS]
        losses = rows_by_rank[self.info.rank][:, 0]
        for value in losses.tolist():
            self.nonfinite_run = 0 if math.isfinite(value) else self.nonfinite_run + 1
        self.buffer, self.host = [], []
        if 0 < self.cfg.stop_after_nonfinite <= self.nonfinite_run:
            self.stop_requested, self.stop_reason = True, "nonfinite"
        self._report(self.step, {**last, T.TOKENS_PER_S: tokens_per_s})

    @torch.no_grad()
    def evaluate(self) -> None:
        self.flush()  # keep metrics.csv in step order
        self.model.eval()
        losses = []
        for i in range(self.cfg.eval_batches):
            x, y = get_batch(
                self.corpus.val,
                self.cfg.batch_size,
                self.cfg.block_size,
                seed=self.cfg.seed,
                step=i,
                rank=self.info.rank,
                stream=1,
            )
            with self.autocast:
                _, stats = self.model(x.to(self.device), y.to(self.device))
            losses.append(stats["ce"])
        self.model.train()
        val = torch.stack(losses).mean().reshape(1)
        for rank, v in enumerate(dist.gather_rows(self.info, val)):
            self.writer.write(
                self.step - 1,
                {T.VAL_LOSS: float(v)},
                time.time(),
                rank if self.info.enabled else None,
            )
            if rank == 0 and self.info.is_main:
                self.health.add(self.step - 1, {T.VAL_LOSS: float(v)})
        self.writer.flush()
        self.last_val = float(val)
        self._report(self.step, {T.VAL_LOSS: self.last_val})

    def _report(self, step: int, metrics: dict[str, float]) -> None:
        if self.progress is None or not self.info.is_main:
            return
        try:
            self.progress(step, metrics)
        except KeyboardInterrupt:  # Ctrl-C inside the CLI's progress bar: stop at this boundary
            self.stop_requested = True


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _stop_on_signals(loop: _Loop) -> Iterator[None]:
    """While training, SIGINT (Ctrl-C) or SIGTERM only asks the loop to stop after the current
    step; a second one gives up at once. Main thread only; the previous handlers come back after."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        if loop.stop_requested and loop.stop_signal:  # the second signal: give up immediately
            raise KeyboardInterrupt
        loop.stop_requested = True
        loop.stop_signal = loop.stop_signal or signal.Signals(signum).name

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ----------------------------------------------------------------------------- preflight

LOG_BYTES_PER_VALUE = 64  # one metrics.csv row, about; TensorBoard is similar


def _existing_dir(run_dir: Path) -> Path:
    """The run directory, or the nearest existing parent it would be created in."""
    where = run_dir
    while not where.exists() and where.parent != where:
        where = where.parent
    if not where.is_dir():
        raise TrainError(f"{run_dir}: cannot create the run directory: {where} is not a directory")
    return where


def check_writable(run_dir: Path) -> None:
    """Write + fsync + delete a probe file where the run will write; TrainError naming the
    directory if that fails. Probes the nearest existing parent when the run directory is still
    to be created, so a failed check leaves no empty run directory behind."""
    where = _existing_dir(run_dir)
    probe = where / f".stabdiag-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"stabdiag")
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
    except OSError as exc:
        with contextlib.suppress(OSError):
            probe.unlink()
        raise TrainError(
            f"{run_dir}: cannot write the run directory ({where}: {exc.strerror or exc})"
        ) from None


def check_disk_space(cfg: TrainConfig, run_dir: Path, model: GPT) -> None:
    """Room for a checkpoint (fp32 parameters + two Adam moments), twice over while it is
    replaced, plus the metric logs; TrainError naming the directory if the disk has less."""
    num_params = sum(p.numel() for p in model.parameters())
    values = cfg.steps * (len(Probes.for_model(model, cfg.precision == "fp16").names) + 2)
    need = 2 * num_params * 4 * 3 + values * LOG_BYTES_PER_VALUE * (2 if cfg.tensorboard else 1)
    free = shutil.disk_usage(_existing_dir(run_dir)).free
    if free < need:
        raise TrainError(
            f"{run_dir}: not enough disk space: {free / 2**20:.1f} MiB free, "
            f"about {need / 2**20:.1f} MiB needed for checkpoints "
            f"({num_params / 1e6:.2f}M params x 4 bytes x 3 with Adam state, x2 while "
            f"one is replaced) and {cfg.steps} steps of metrics"
        )


# ----------------------------------------------------------------------------- metadata


def _metadata(
    cfg: TrainConfig,
    device: torch.device,
    info: dist.DistInfo,
    corpus: Corpus,
    model: GPT,
    events: tuple[inject.InjectEvent, ...],
    threads: int,
) -> dict[str, Any]:
    return {
        "threads": threads,
        "stabdiag_version": __version__,
        "torch_version": torch.__version__,
        "python_version": sys.version.split()[0],
        "platform": platform.platform(),
        "device": str(device),
        "precision": cfg.precision,
        "world_size": info.world_size,
        "num_params": sum(p.numel() for p in model.parameters()),
        "corpus": {"name": corpus.name, "bytes": corpus.num_bytes, "sha256": corpus.sha256},
        "injected": [e.to_dict() for e in events],
        "started": _now(),
        "preset": cfg.preset,
        "recipe": cfg.recipe,
    }


def _check_resume_config(run_dir: Path, cfg: TrainConfig) -> TrainConfig:
    """The config to resume with: cfg, with the saved value of every key the preset or recipe
    derives (e.g. warm-up = 10% of steps) whose change only follows a resumable one (steps);
    TrainError naming any other change."""
    saved = _read_json(run_dir / "config.json")
    derived = derived_keys(cfg)
    keep = {}
    for key, fn in derived.items():
        if key in saved and saved[key] != getattr(cfg, key):
            try:
                was = fn(TrainConfig.from_dict(saved, where=str(run_dir / "config.json")))
            except TrainError:
                continue
            if was == saved[key] and fn(cfg) == getattr(cfg, key):
                keep[key] = saved[key]
    if keep:
        cfg = dataclasses.replace(cfg, **keep)
    changed = sorted(
        k
        for k, v in cfg.to_dict().items()
        if k in saved and saved[k] != v and k not in RESUMABLE_CHANGES
    )
    if changed:
        raise TrainError(
            f"{run_dir}: cannot resume with a different config; changed: "
            + ", ".join(f"{k} ({saved[k]!r} -> {getattr(cfg, k)!r})" for k in changed)
        )
    return cfg


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise TrainError(
            f"{path}: expected the run's JSON metadata, found it missing or damaged"
        ) from None


def _strict(value: Any) -> Any:
    """NaN and +-inf -> None (JSON null), recursively: run.json is strict JSON for any parser."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def _write_json(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(_strict(data), indent=2, default=str, allow_nan=False)
    write_atomic(path, text + "\n")  # resume reads it back


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
