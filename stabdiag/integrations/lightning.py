"""``StabdiagCallback`` for Lightning (``lightning.pytorch.Callback``).

    trainer = lightning.Trainer(..., callbacks=[StabdiagCallback(action="checkpoint")])

Per training batch it keeps the step's loss as the (already detached) tensor Lightning hands to
``on_train_batch_end`` and the LR from the optimizer (a host float): no device sync, one list
append. Every ``max(log_every_n_steps, feed_every)`` batches (``feed_every`` = 16: feeding the
monitor costs ~0.1-0.2 ms of cold-cache Python, too much per step of a tiny model; a spike is
then seen at most that many steps late) the kept losses move to the host in one transfer, with
any grad norm or loss scale the module logged (``self.log("grad_2.0_norm_total", ...)``, names
mapped as ``stabdiag analyze`` maps them) and the AMP loss scale; then the detectors run under
the Monitor's time budget, at once when a value looks like a spike or is NaN/Inf. On a new
finding at or above ``level`` it logs through the ``lightning.pytorch`` logger, appends it to
``<log_dir>/stabdiag_findings.jsonl`` and acts: ``warn``, ``stop`` (``trainer.should_stop``) or
``checkpoint`` (``trainer.save_checkpoint`` to ``<log_dir>/stabdiag-step<N>.ckpt``, then stop).
Steps are optimizer steps counted from 0 (``trainer.global_step`` before the step).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from stabdiag import table as T
from stabdiag.integrations._common import GuardCallback
from stabdiag.live.monitor import FINDINGS_FILE

__all__ = ["FINDINGS_FILE", "StabdiagCallback"]

_LOGGER = logging.getLogger("lightning.pytorch.callbacks.stabdiag")
_FROM_LOGGED = (T.GRAD_NORM, T.LOSS_SCALE)


class StabdiagCallback(GuardCallback, pl.Callback):
    """Live stability guard for Lightning; see the module docstring. ``feed_every``: batches
    between hand-overs to the monitor (at least Lightning's ``log_every_n_steps``); the other
    options are ``GuardCallback``'s (``stabdiag.integrations._common``); ``findings_dir``
    defaults to the trainer's log_dir and the run's name to the module's class name."""

    _framework = "Lightning"
    _logger = _LOGGER

    def __init__(self, *, feed_every: int = 16, **options: Any) -> None:
        super().__init__(**options)
        if feed_every < 1:
            raise ValueError("feed_every must be >= 1")
        self._feed_every = feed_every
        self.checkpoint_path: Path | None = None
        self._names: dict[str, str] = {}  # logged key -> canonical metric (or "")

    # ------------------------------------------------------------------ hooks

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._out = Path(self._dir or trainer.log_dir or trainer.default_root_dir)
        self._start(type(pl_module).__name__, self._out, writer=trainer.is_global_zero)
        self._ranks = trainer.world_size
        self._flushes = 0
        self._has_logged = False  # whether the module logs a grad norm / loss scale we read
        self._rows: list[tuple[int, Any, Any]] = []
        self._every = max(1, trainer.log_every_n_steps, self._feed_every)
        opts = trainer.optimizers
        self._groups = opts[0].param_groups if opts and opts[0].param_groups else None

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        m = self.monitor
        if m is None:
            return
        step = trainer.global_step - 1  # already advanced past this batch's optimizer step
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        groups = self._groups
        lr = groups[0].get("lr") if groups else None
        # Per step only an append: the values reach the monitor (and the host) at the interval.
        self._rows.append((step, loss, lr))
        if (batch_idx + 1) % self._every == 0:
            self._feed()
            self._logged(trainer, step)
            m.flush()
            self._act(trainer, step)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.monitor is None or trainer.sanity_checking:
            return
        for k, v in trainer.callback_metrics.items():
            if self._canonical(k) == T.VAL_LOSS:
                self.monitor.log(max(trainer.global_step - 1, 0), val_loss=v)
        self.monitor.flush()
        self._act(trainer, max(trainer.global_step - 1, 0))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.monitor is not None:
            self._feed()
            self.monitor.close()

    # ------------------------------------------------------------------ internals

    def _feed(self) -> None:
        """The interval's losses (one host transfer) and LRs to the monitor, a series each."""
        rows, self._rows = self._rows, []
        if not rows:
            return
        losses = [(s, x) for s, x, _ in rows if x is not None]
        self.monitor.log_series(T.TRAIN_LOSS, [s for s, _ in losses], [x for _, x in losses])
        lrs = [(s, r) for s, _, r in rows if type(r) is float]
        if lrs:
            self.monitor.log_series(T.LR, [s for s, _ in lrs], [r for _, r in lrs])

    def _canonical(self, key: str) -> str:
        name = self._names.get(key)
        if name is None:
            from stabdiag.sources import aliases

            name = self._names[key] = aliases.canonical(key)[0]
        return name

    def _logged(self, trainer: pl.Trainer, step: int) -> None:
        """Grad norm / loss scale the module logged, and the AMP scaler's scale (tensors: kept
        pending until this interval's single flush)."""
        extra = {}
        self._flushes += 1
        # Looking through the logged metrics costs a little; without a grad norm among them,
        # look again only every 50 intervals (a module may start logging one later).
        if self._has_logged or self._flushes % 50 == 1:
            for k, v in trainer.callback_metrics.items():
                c = self._canonical(k)
                if c in _FROM_LOGGED:
                    extra[c] = v
            self._has_logged = bool(extra)
        scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
        if (
            scaler is not None
            and T.LOSS_SCALE not in extra
            and getattr(scaler, "_scale", None) is not None
        ):
            extra[T.LOSS_SCALE] = scaler._scale
        if extra:
            self.monitor.log(step, metrics=extra)

    def _act(self, trainer: pl.Trainer, step: int) -> None:
        """Stop (after saving) when the monitor says so; called at logging intervals only, since
        under DDP the decision is agreed across ranks (a collective) so that all ranks stop."""
        m = self.monitor
        if m is None or (not m.should_stop and self._ranks == 1) or trainer.should_stop:
            return
        stop = m.should_stop
        if self._ranks > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop:
            return
        if m.action == "checkpoint":
            self.checkpoint_path = self._out / f"stabdiag-step{step}.ckpt"
            trainer.save_checkpoint(self.checkpoint_path)
        trainer.should_stop = True
        why = (
            f"{m.stop_finding.kind} at step {m.stop_step}"
            if m.stop_finding
            else "another rank's finding"
        )
        _LOGGER.warning(f"stabdiag: stopping training after step {step} ({why}, action={m.action})")
