"""``StabdiagCallback`` for the Hugging Face ``Trainer`` (and TRL's trainers, which subclass it).

    trainer = Trainer(..., callbacks=[StabdiagCallback(action="stop")])

It reads what the Trainer already logs at each logging step (``loss``, ``grad_norm``,
``learning_rate``, ``eval_loss``: host floats by then, so no extra device sync) and runs the
detectors incrementally. On a new finding at or above ``level`` (default ``error``) it logs
through the ``transformers`` logger, appends it to ``<output_dir>/stabdiag_findings.jsonl`` and
acts: ``warn`` (log only), ``stop`` (``control.should_training_stop``), ``checkpoint`` (also
``control.should_save``, so the Trainer saves that step before it stops). Note that the Trainer's
``loss`` is the mean over ``logging_steps`` steps: a one-step spike is diluted by that factor, so
log often (``logging_steps`` 1-10) when the guard matters.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import Any

from transformers import TrainerCallback
from transformers.utils import logging as hf_logging

from stabdiag import table as T
from stabdiag.integrations._common import make_monitor
from stabdiag.live.monitor import FINDINGS_FILE, Monitor

__all__ = ["FINDINGS_FILE", "StabdiagCallback"]

_LOGGER = hf_logging.get_logger("transformers.stabdiag")
# Trainer log keys -> canonical metrics (the trainer_state.json spellings, see sources/aliases.py).
_KEYS = {
    "loss": T.TRAIN_LOSS,
    "grad_norm": T.GRAD_NORM,
    "learning_rate": T.LR,
    "eval_loss": T.VAL_LOSS,
}


class StabdiagCallback(TrainerCallback):
    """Live stability guard for ``transformers.Trainer``; see the module docstring.

    ``findings_dir``: where ``stabdiag_findings.jsonl`` goes (default: the Trainer's output_dir).
    ``check_every``/``budget``: see ``stabdiag.Monitor`` (default: full checks within 0.5 % of the
    wall time, plus an immediate one when a logged value looks like a spike or is NaN/Inf)."""

    def __init__(
        self,
        *,
        action: str = "warn",
        level: str = "error",
        run: str | None = None,
        findings_dir: str | os.PathLike[str] | None = None,
        check_every: int = 0,
        budget: float = 0.005,
        select: Collection[str] | None = None,
        ignore: Collection[str] | None = None,
        configs: Mapping[str, Any] | None = None,
    ) -> None:
        if action == "skip":
            raise ValueError(
                "action='skip' is for a plain PyTorch loop (stabdiag.Monitor); "
                "use warn, stop or checkpoint with the Trainer"
            )
        self._opts = dict(
            action=action,
            level=level,
            check_every=check_every,
            budget=budget,
            select=select,
            ignore=ignore,
            configs=configs,
        )
        make_monitor(
            "probe", None, logger=_LOGGER, **self._opts
        )  # bad options fail here, not mid-run
        self._run = run
        self._dir = findings_dir
        self.monitor: Monitor | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        out = self._dir if self._dir is not None else args.output_dir
        writer = state.is_world_process_zero
        self.monitor = make_monitor(
            self._run or args.run_name or os.path.basename(str(args.output_dir)),
            out if writer else None,
            logger=_LOGGER,
            **self._opts,
        )
        if not writer:
            self.monitor.on_finding = None

    def on_log(
        self,
        args: Any,
        state: Any,
        control: Any,
        logs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if self.monitor is None or not logs:
            return
        values = {_KEYS[k]: v for k, v in logs.items() if k in _KEYS and isinstance(v, int | float)}
        if not values:
            return
        self.monitor.log(state.global_step, metrics=values)
        self._act(control)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.monitor is not None:
            self.monitor.close()

    def _act(self, control: Any) -> None:
        m = self.monitor
        if m is not None and m.should_stop and not control.should_training_stop:
            control.should_training_stop = True
            if m.action == "checkpoint":
                control.should_save = True
            _LOGGER.warning(
                f"stabdiag: stopping training at step {m.stop_step} ({m.stop_finding.kind}, "
                f"action={m.action})"
            )
