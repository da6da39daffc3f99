"""Which series is the loss: the evident one when no alias matched, said out loud.

A run whose loss is called ``mean_loss`` (a Lightning PINN), ``total_loss`` or ``objective``, or
that logs only a validation loss or a perplexity, is still a run someone wants judged. Giving up
("not judged") on such a run hides a NaN in plain sight; guessing silently is worse. So the choice
is made by a few explicit rules, in order, and the report says which series was taken and why:

1. ``train/loss`` exists (an alias matched, or ``--map``): nothing to choose.
2. Unknown series whose name says loss (``loss``, ``objective``) and not validation/test/scale:
   one such series -> it; several -> the one named as an aggregate (total, mean, sum, ...), else the
   one whose values equal the sum or the mean of the others, else their sum (a derived series).
3. No training loss at all: the validation loss (``val/loss``), or a perplexity series taken as
   ln(ppl) (a validation one unless its name says train).

Pure: a RunData in, a RunData (possibly with the chosen series under its canonical name) and a
``LossChoice`` out. ``--map train/loss=SERIES`` always wins, because it makes rule 1 apply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from stabdiag.table import TRAIN_LOSS, VAL_LOSS, RunData, Series, is_canonical

_LOSSY = re.compile(r"(loss|objective)", re.I)
_NOT_TRAIN = re.compile(
    r"(^|[/_\-. ])(val|valid|validation|eval|test|dev)([/_\-. ]|$)|scale|weight|coef", re.I
)
_AGGREGATE = re.compile(
    r"(^|[/_\-. ])(total|mean|avg|average|overall|sum|combined|full|all)([/_\-. ]|$)", re.I
)
_PPL = re.compile(r"(^|[/_\-. ])(ppl|perplexity)([/_\-. ]|$)", re.I)
_TRAIN_WORD = re.compile(r"(^|[/_\-. ])(train|training)([/_\-. ]|$)", re.I)
_OTHER_FAMILY = ("rl/", "critic/", "meta/")


@dataclass(frozen=True)
class LossChoice:
    """The loss a run is judged on: its canonical metric, the series it came from, and why."""

    metric: str  # train/loss or val/loss
    series: str  # the raw or canonical series name it was read from ("a + b" when derived)
    why: str

    def to_dict(self) -> dict[str, str]:
        return {"metric": self.metric, "series": self.series, "why": self.why}


def _aligned(parts: dict[str, Series]) -> tuple[np.ndarray, np.ndarray]:
    """Common steps of all series and a (n_series, n_steps) value matrix on them."""
    steps = None
    for s in parts.values():
        steps = s.steps if steps is None else np.intersect1d(steps, s.steps)
    assert steps is not None
    mat = np.vstack([s.values[np.searchsorted(s.steps, steps)] for s in parts.values()])
    return steps, mat


def _is_total(name: str, parts: dict[str, Series]) -> str | None:
    """'sum' or 'mean' when ``name``'s values equal that of the other series (checked where all
    are finite), else None."""
    others = {k: v for k, v in parts.items() if k != name}
    if not others:
        return None
    steps, mat = _aligned({name: parts[name], **others})
    ok = np.all(np.isfinite(mat), axis=0)
    if ok.sum() < 3:
        return None
    tot, rest = mat[0, ok], mat[1:, ok]
    for how, val in (("sum", rest.sum(axis=0)), ("mean", rest.mean(axis=0))):
        if np.allclose(tot, val, rtol=1e-3, atol=1e-9):
            return how
    return None


def _train_candidates(run: RunData) -> dict[str, Series]:
    return {
        k: v
        for k, v in run.series.items()
        if not is_canonical(k)
        and not k.startswith(_OTHER_FAMILY)
        and len(v)
        and _LOSSY.search(k)
        and not _NOT_TRAIN.search(k)
    }


def choose(run: RunData) -> tuple[RunData, LossChoice | None]:
    """The run with its loss under a canonical name, and how it was chosen (None: no loss)."""
    if run.get(TRAIN_LOSS) is not None:
        return run, LossChoice(TRAIN_LOSS, TRAIN_LOSS, "the training loss")
    cands = _train_candidates(run)
    picked: tuple[str, Series, str] | None = None
    if len(cands) == 1:
        ((name, s),) = cands.items()
        picked = (name, s, f"the only series named like a loss ('{name}')")
    elif cands:
        agg = [k for k in cands if _AGGREGATE.search(k)]
        if len(agg) == 1:
            how = _is_total(agg[0], cands)
            picked = (
                agg[0],
                cands[agg[0]],
                f"'{agg[0]}' is the aggregate of the {len(cands) - 1} other loss series"
                + (f" (it equals the {how} of the others)" if how else ""),
            )
        else:
            for k in cands:
                how = _is_total(k, cands)
                if how:
                    picked = (
                        k,
                        cands[k],
                        f"'{k}' equals the {how} of the other {len(cands) - 1} loss series",
                    )
                    break
            if picked is None:
                steps, mat = _aligned(cands)
                if len(steps):
                    names = " + ".join(cands)
                    picked = (
                        names,
                        Series(steps, mat.sum(axis=0)),
                        f"the sum of the {len(cands)} loss components ({names}), computed",
                    )
    if picked is not None:
        name, s, why = picked
        series = {**run.series, TRAIN_LOSS: s}
        return replace(run, series=series), LossChoice(TRAIN_LOSS, name, why)
    if run.get(VAL_LOSS) is not None:
        return run, LossChoice(
            VAL_LOSS, VAL_LOSS, "no training loss was logged: judged on the validation loss"
        )
    ppl = [k for k, v in run.series.items() if len(v) and not is_canonical(k) and _PPL.search(k)]
    if len(ppl) == 1 or (ppl and len({_TRAIN_WORD.search(k) is None for k in ppl}) == 1):
        k = ppl[0]
        s = run.series[k]
        with np.errstate(divide="ignore", invalid="ignore"):
            vals = np.where(s.values > 0, np.log(s.values), np.nan)
        metric = TRAIN_LOSS if _TRAIN_WORD.search(k) else VAL_LOSS
        series = {**run.series, metric: Series(s.steps, vals)}
        which = "training" if metric == TRAIN_LOSS else "validation"
        return replace(run, series=series), LossChoice(
            metric,
            k,
            f"no loss was logged: the {which} loss is ln('{k}'), computed from the perplexity",
        )
    return run, None
