"""Shared fixtures for renderer tests: hand-built Reports (no readers or detectors needed).

Golden files are regenerated with ``STABDIAG_UPDATE_GOLDEN=1 pytest tests/render`` (or
``--update-golden`` when pytest is started on this folder).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from stabdiag.findings import Finding, Severity, Skipped
from stabdiag.remedies import Remedy
from stabdiag.report import Report, RunSummary
from stabdiag.table import (
    GRAD_NORM,
    LOSS_SCALE,
    LR,
    MAX_ATTN_LOGIT,
    RESTART,
    SKIPPED_STEP,
    TRAIN_LOSS,
    VAL_LOSS,
    MetricsTable,
)

GOLDEN = Path(__file__).parent / "golden"
NASTY = "evil <b>run</b> | *x* [a](http://e) @team `c` %0A:,"


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    try:
        flag = bool(request.config.getoption("--update-golden"))
    except ValueError:
        flag = False
    return flag or os.environ.get("STABDIAG_UPDATE_GOLDEN") == "1"


@pytest.fixture
def golden(update_golden: bool):
    """Compare text with a golden file, or rewrite it when updating."""

    def check(name: str, text: str) -> None:
        path = GOLDEN / name
        if update_golden or not path.exists():
            path.write_text(text, encoding="utf-8")
            if not update_golden:
                pytest.fail(f"golden file {name} was missing and has been written; re-run")
            return
        assert text == path.read_text(encoding="utf-8"), (
            f"{name} differs from its golden file; STABDIAG_UPDATE_GOLDEN=1 to accept"
        )

    return check


def _records(run: str, steps: np.ndarray, series: dict[str, np.ndarray]) -> MetricsTable:
    s, m, v = [], [], []
    for metric, vals in series.items():
        s.append(steps[: len(vals)])
        m.append(np.full(len(vals), metric, dtype=object))
        v.append(vals)
    return MetricsTable.from_records(
        run, np.concatenate(s), np.concatenate(m), np.concatenate(v), source="test"
    )


def sample_table(run: str = "gpt-small/seed:1", n: int = 1000) -> MetricsTable:
    rng = np.random.default_rng(0)
    steps = np.arange(n)
    loss = 2.0 + 3.5 * (1 + steps / 40.0) ** -0.7 * np.exp(rng.normal(0, 0.02, n))
    loss[300:330] += np.linspace(3, 0, 30)
    loss[800:] += np.linspace(0, 4, n - 800)
    loss[850] = np.nan
    grad = (0.4 + 1.6 * np.exp(-steps / 80.0)) * np.exp(rng.normal(0, 0.1, n))
    grad[302] = 60.0
    grad[800:] *= np.logspace(0, 3, n - 800)
    lr = np.minimum(1, (steps + 1) / 50) * 3e-4
    scale = np.full(n, 65536.0)
    scale[:40] = 2.0 ** (16 - np.minimum(np.arange(40) // 8, 4))
    scale[40:] = 4096.0
    skipped = np.zeros(n)
    skipped[[0, 8, 16, 24, 32]] = 1
    attn = 5 + steps / 100
    val_steps = steps[::100]
    t = _records(
        run,
        steps,
        {
            TRAIN_LOSS: loss,
            GRAD_NORM: grad,
            LR: lr,
            LOSS_SCALE: scale,
            SKIPPED_STEP: skipped,
            MAX_ATTN_LOGIT: attn,
        },
    )
    val = MetricsTable.from_records(
        run, val_steps, [VAL_LOSS] * len(val_steps), loss[val_steps] + 0.05, source="test"
    )
    rs = MetricsTable.from_records(run, [600], [RESTART], [640], source="test")
    return MetricsTable.concat([t, val, rs])


def _f(
    code: str,
    kind: str,
    sev: Severity,
    run: str,
    metric: str,
    a: int | None,
    b: int | None,
    msg: str,
    **ev: object,
) -> Finding:
    return Finding(
        code=code,
        kind=kind,
        severity=sev,
        run=run,
        metric=metric,
        step_start=a,
        step_end=b,
        message=msg,
        evidence=dict(ev),
    )


def make_report(nasty: bool = True) -> Report:
    a = "gpt-small/seed:1"
    b = NASTY if nasty else "clean"
    table = MetricsTable.concat(
        [
            sample_table(a),
            _records(b, np.arange(200), {TRAIN_LOSS: 3.0 - np.arange(200) / 100}),
        ]
    )
    findings = tuple(
        [
            _f(
                "SD105",
                "fp16-overflow",
                Severity.INFO,
                a,
                LOSS_SCALE,
                s,
                s,
                "loss scale halved (start-up scale search)",
                scale=65536.0,
            )
            for s in (0, 8, 16, 24, 32)
        ]
        + [
            _f(
                "SD101",
                "loss-spike",
                Severity.WARNING,
                a,
                TRAIN_LOSS,
                300,
                329,
                "loss rose 2.4x above its baseline 2.31 at step 300; recovered after 29 steps",
                peak=5.6,
                baseline=2.31,
                z=14.2,
            ),
            _f(
                "SD102",
                "grad-spike",
                Severity.WARNING,
                a,
                GRAD_NORM,
                302,
                302,
                "grad norm 60 is 90x its median 0.66",
                value=60.0,
                median=0.66,
            ),
            _f(
                "SD110",
                "restart",
                Severity.INFO,
                a,
                "meta/restart",
                600,
                600,
                "step counter went back from 640 to 600 (resumed from a checkpoint)",
            ),
            _f(
                "SD106",
                "divergence",
                Severity.ERROR,
                a,
                TRAIN_LOSS,
                800,
                999,
                "loss rose from 2.1 to 6.1 after step 800 and did not come back",
                start=2.1,
                end=6.1,
            ),
            _f(
                "SD104",
                "nonfinite",
                Severity.ERROR,
                a,
                TRAIN_LOSS,
                850,
                850,
                "train/loss is NaN at step 850",
                first=850,
                count=1,
            ),
            _f(
                "SD101",
                "loss-spike",
                Severity.WARNING,
                b,
                TRAIN_LOSS,
                120,
                121,
                f"spike in {b} <script>alert(1)</script>",
                peak=float("nan"),
            ),
        ]
    )
    skipped = (
        Skipped(code="SD112", kind="rank-divergence", run=a, reason="single rank <only>"),
        Skipped(code="SD102", kind="grad-spike", run=b, reason="no train/grad_norm series"),
    )
    remedies = (
        Remedy(
            id="clip",
            kind="grad-spike",
            run=a,
            rank=1,
            title="Clip the global grad norm",
            actions=("clip the global grad norm at 2.1 (p99 of the run)",),
            why="bounds the update",
            references=("Wortsman et al. 2023",),
            addresses=("grad-spike", "loss-spike"),
        ),
        Remedy(
            id="rewind",
            kind="divergence",
            run=a,
            rank=2,
            title="Rewind and lower the LR",
            actions=("restart from the checkpoint at step 700", "lower the peak LR to 1.5e-4"),
            why="PaLM-style rewind",
            references=("Chowdhery et al. 2022",),
            addresses=("divergence",),
        ),
        Remedy(
            id="lr",
            kind="loss-spike",
            run=b,
            rank=1,
            title="Lower the LR <now>",
            actions=("lower the LR | 2x",),
            why="why",
            references=(),
            addresses=("loss-spike",),
        ),
    )
    runs = (
        RunSummary(
            name=a,
            path="runs/gpt-small/seed1",
            format="tensorboard",
            steps=(0, 999),
            metrics=tuple(sorted(table.metrics(a))),
            warnings=("dropped 3 truncated records at byte 4096",),
        ),
        RunSummary(
            name=b, path=f"runs/{b}.csv", format="csv", steps=(0, 199), metrics=(TRAIN_LOSS,)
        ),
    )
    return Report(
        runs=runs,
        findings=findings,
        skipped=skipped,
        remedies=remedies,
        errors=("runs/broken.csv: expected CSV with a header row, found binary data",),
        version="9.9.9",
        table=table,
    )


@pytest.fixture
def report() -> Report:
    return make_report()
