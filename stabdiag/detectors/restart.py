"""restart (SD601): the step counter went back (a rewind or resume from an older checkpoint).

What it detects
    Each ``meta/restart`` row the readers write where a run resumed: at step S the run continued
    from an earlier checkpoint, after having logged up to step R. One finding per restart.

Why it matters
    Restarts explain duplicated or overwritten steps (later values win) and are usually the trace
    of an intervention: a crash, or a manual rewind after a spike (PaLM, BLOOM). Several restarts,
    or a restart right next to trouble, say the run is being nursed along.

How it is computed
    Every restart is ``info`` with ``rewound_from`` = R and ``steps_replayed`` = R - S + 1.
    ``warning`` when the run has >= ``several`` (3) restarts, or when trouble (loss spike,
    non-finite loss, grad-norm explosion, including the short-log rules of loss-spike and
    grad-explosion) lies within max(``window_steps`` (50),
    ``window_frac`` (2 %) of the run) steps of S. A run without restart rows gives no finding: the
    check always runs and is never skipped.

Known false positives
    Readers that concatenate unrelated runs into one produce restarts that are really separate
    runs.

References
    PaLM (arXiv 2204.02311) rewind ~100 steps before a spike and skip 200-500 batches; BigScience
    tr8-104B chronicles (rollbacks to earlier checkpoints); formats.md section 11 item 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stabdiag import words
from stabdiag.detectors._common import finding
from stabdiag.detectors._trouble import first_within, trouble
from stabdiag.detectors.base import Detector
from stabdiag.findings import Finding, Severity, Skipped
from stabdiag.table import RESTART, RunData

CODE, KIND = "SD601", "restart"


@dataclass(frozen=True, kw_only=True)
class Config:
    """Thresholds of the restart check (``[tool.stabdiag.detectors.restart]``)."""

    several: int = 3
    """A run with this many restarts is a warning: it keeps falling over."""
    window_steps: int = 50
    """A restart with trouble (a loss spike, a non-finite loss, a grad explosion) within
    max(50 steps, ``window_frac`` of the run) of its resume step is a warning: the run was probably
    rewound because of it, and it may recur."""
    window_frac: float = 0.02
    """... or within 2 % of the run's steps, whichever is longer."""


DEFAULT = Config()


def _span(run: RunData) -> int:
    lo = min((int(s.steps[0]) for s in run.series.values() if len(s)), default=0)
    hi = max((int(s.steps[-1]) for s in run.series.values() if len(s)), default=0)
    return hi - lo


def check(run: RunData, cfg: Config = DEFAULT) -> list[Finding] | Skipped:
    r = run.get(RESTART)
    if r is None:
        return []
    events = trouble(run)
    win = max(cfg.window_steps, int(cfg.window_frac * _span(run)))
    n = len(r)
    out: list[Finding] = []
    for k, (step, prev) in enumerate(zip(r.steps.tolist(), r.values.tolist(), strict=True)):
        rewound = int(prev) if np.isfinite(prev) else None
        replayed = rewound - step + 1 if rewound is not None and rewound >= step else None
        near = first_within(events, step - win, step + win)
        sev = Severity.WARNING if n >= cfg.several or near else Severity.INFO
        back = f" after reaching step {rewound}" if rewound is not None else ""
        rep = f", replaying {words.count(replayed, 'step')}" if replayed else ""
        extra = f"; {near[1]} at step {near[0]} nearby" if near else ""
        many = f" (restart {k + 1} of {n})" if n > 1 else ""
        out.append(
            finding(
                CODE,
                KIND,
                run,
                severity=sev,
                metric=RESTART,
                step_start=step,
                step_end=rewound if rewound is not None and rewound >= step else step,
                message=f"run resumed at step {step}{back}{rep}{many}{extra}.",
                evidence={
                    "resumed_at": step,
                    "rewound_from": rewound,
                    "steps_replayed": replayed,
                    "restart_index": k + 1,
                    "restarts": n,
                    "trouble_nearby": near[1] if near else None,
                    "trouble_step": near[0] if near else None,
                },
            )
        )
    return out


DETECTOR = Detector(
    code=CODE,
    kind=KIND,
    summary="the step counter goes back (rewind / resume)",
    doc=__doc__ or "",
    check=check,
    config=Config,
)
