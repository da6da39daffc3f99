"""Where a run was in trouble (loss spikes, grad explosions/spikes, non-finite loss), for the
detectors that judge something else by whether trouble followed it (lr-schedule, restart)."""

from __future__ import annotations

import numpy as np

from stabdiag.detectors import grad_explosion, grad_spike, loss_spike
from stabdiag.detectors._common import loss_metric
from stabdiag.table import GRAD_NORM, RunData


def trouble(run: RunData, grad_spikes: bool = False) -> list[tuple[int, str]]:
    """(step, what) of each trouble event, sorted by step.

    Isolated grad-norm spikes only count with ``grad_spikes``: on their own they are too common
    (clipping handles them) to blame a schedule or a restart for.
    """
    out: list[tuple[int, str]] = []
    s = run.get(loss_metric(run))
    if s is not None:
        bad = ~np.isfinite(s.values)
        if bad.any():
            out.append((int(s.steps[bad][0]), "non-finite loss"))
        for ev in loss_spike.run_events(run):
            out.append((int(s.steps[ev.onset]), "loss spike"))
    g = run.get(GRAD_NORM)
    if g is not None:
        for a, _b, _ref in grad_explosion.find_explosions(g.values):
            out.append((int(g.steps[a]), "grad-norm explosion"))
        idx = grad_spike.spike_points(g.values)[0] if grad_spikes else []
        out.extend((int(g.steps[i]), "grad-norm spike") for i in idx[:100])
    return sorted(out)


def first_within(events: list[tuple[int, str]], lo: int, hi: int) -> tuple[int, str] | None:
    """First trouble event with lo <= step <= hi."""
    return next(((st, w) for st, w in events if lo <= st <= hi), None)
