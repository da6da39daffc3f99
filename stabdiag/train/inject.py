"""Fault-injection events: parse `kind@step[:key=value,...]` specs (no torch here).

Kinds and their parameters (defaults in brackets):

- `bad_batch@S[:mode=random|repeat,byte=65,steps=1,rank=-1]`: data batch S (and the next
  `steps - 1`) is uniformly random bytes [random] or one repeated byte; a stand-in for a corrupt
  or degenerate document. S is a position in the data, which is the step unless batches were
  skipped (`skip_batches`, `stabdiag branch --skip-batches`), so skipping it removes it.
  `rank=R` corrupts only rank R's batch under torchrun (-1: every rank).
- `lr_spike@S[:factor=10,steps=1]`: the LR is multiplied by `factor` for `steps` steps from S.
- `grad_scale@S[:factor=1e6]`: the backward pass at step S runs on `factor * loss`, so every
  gradient is `factor` times too large; under fp16 this overflows the fp16 activations'
  gradients, exactly as a real blow-up would, and the loss scaler skips the step.

The parsed events are recorded in `run.json` so tests and `analyze` can check what was injected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stabdiag.errors import TrainError

_PARAMS: dict[str, dict[str, float | str]] = {
    "bad_batch": {"mode": "random", "byte": 65, "steps": 1, "rank": -1},
    "lr_spike": {"factor": 10.0, "steps": 1},
    "grad_scale": {"factor": 1e6},
}


@dataclass(frozen=True)
class InjectEvent:
    """One injected fault: its kind, first step, and parameters (defaults filled in)."""

    kind: str
    step: int
    params: dict[str, float | str] = field(default_factory=dict)

    @property
    def last_step(self) -> int:
        return self.step + int(self.params.get("steps", 1)) - 1

    def covers(self, step: int) -> bool:
        return self.step <= step <= self.last_step

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "step": self.step,
            "last_step": self.last_step,
            "params": dict(self.params),
        }


def parse_event(spec: str) -> InjectEvent:
    """Parse one spec such as 'lr_spike@40:factor=10,steps=5'."""
    head, _, tail = spec.strip().partition(":")
    kind, at, step = head.partition("@")
    kind = kind.strip().replace("-", "_")
    if kind not in _PARAMS or not at:
        raise TrainError(
            f"inject '{spec}': expected KIND@STEP[:key=value,...] with KIND one of "
            f"{', '.join(_PARAMS)}"
        )
    try:
        first = int(step)
    except ValueError:
        raise TrainError(f"inject '{spec}': step must be an integer, got '{step}'") from None
    params = dict(_PARAMS[kind])
    for item in filter(None, (p.strip() for p in tail.split(","))):
        key, eq, raw = item.partition("=")
        if key not in params or not eq:
            raise TrainError(
                f"inject '{spec}': unknown parameter '{key}' for {kind}; known: {', '.join(params)}"
            )
        default = params[key]
        try:
            params[key] = raw if isinstance(default, str) else type(default)(float(raw))
        except ValueError:
            raise TrainError(f"inject '{spec}': {key} must be a number, got '{raw}'") from None
    if kind == "bad_batch" and params["mode"] not in ("random", "repeat"):
        raise TrainError(f"inject '{spec}': mode must be random or repeat")
    if first < 0 or int(params.get("steps", 1)) < 1:
        raise TrainError(f"inject '{spec}': step must be >= 0 and steps >= 1")
    return InjectEvent(kind, first, params)


def parse_events(specs: tuple[str, ...] | list[str]) -> tuple[InjectEvent, ...]:
    return tuple(parse_event(s) for s in specs)


def _factor(events: tuple[InjectEvent, ...], kind: str, step: int) -> float:
    """The product of the factors of the `kind` events covering `step` (1.0 when none do)."""
    factor = 1.0
    for e in events:
        if e.kind == kind and e.covers(step):
            factor *= float(e.params["factor"])
    return factor


def lr_factor(events: tuple[InjectEvent, ...], step: int) -> float:
    return _factor(events, "lr_spike", step)


def grad_factor(events: tuple[InjectEvent, ...], step: int) -> float:
    return _factor(events, "grad_scale", step)


def bad_batch(events: tuple[InjectEvent, ...], index: int, rank: int = 0) -> InjectEvent | None:
    """The bad-batch event covering data batch `index` on `rank`, if any."""
    return next(
        (
            e
            for e in events
            if e.kind == "bad_batch" and e.covers(index) and int(e.params["rank"]) in (-1, rank)
        ),
        None,
    )
