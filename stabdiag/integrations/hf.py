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
from collections.abc import Mapping
from typing import Any

from transformers import TrainerCallback
from transformers.utils import logging as hf_logging

from stabdiag import table as T
from stabdiag.integrations._common import GuardCallback
from stabdiag.live.monitor import FINDINGS_FILE

__all__ = ["FINDINGS_FILE", "StabdiagCallback"]

_LOGGER = hf_logging.get_logger("transformers.stabdiag")
# Trainer log keys -> canonical metrics (the trainer_state.json spellings, see sources/aliases.py).
_KEYS = {
    "loss": T.TRAIN_LOSS,
    "grad_norm": T.GRAD_NORM,
    "learning_rate": T.LR,
    "eval_loss": T.VAL_LOSS,
}


class StabdiagCallback(GuardCallback, TrainerCallback):
    """Live stability guard for ``transformers.Trainer``; see the module docstring. The options
    are ``GuardCallback``'s (``stabdiag.integrations._common``); ``findings_dir`` defaults to the
    Trainer's output_dir and the run's name to its run_name."""

    _framework = "the Trainer"
    _logger = _LOGGER

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        out = self._dir if self._dir is not None else args.output_dir
        default = args.run_name or os.path.basename(str(args.output_dir))
        self._start(default, out, writer=state.is_world_process_zero)

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
