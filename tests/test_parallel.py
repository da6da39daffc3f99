"""Analysis in worker processes gives exactly the serial report.

With many runs, each run is read, finished and detected in the worker that read it, under its
base name (unique names need every run), and the parent names it; a run that turns out to be a
copy of another (two loggers) is merged and judged again here; a file a worker could not read is
read again here so its error says why. Every one of those paths must end in the serial report.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stabdiag import diagnose as dg
from stabdiag import sources
from stabdiag.render import render

REAL = Path(__file__).resolve().parents[2] / "shared" / "real_logs"
SAMPLES = Path(__file__).resolve().parents[1] / "sample_runs"


def _csv(path: Path, loss: np.ndarray, extra: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    head = "step,loss,grad_norm" + (",lr" if extra else "")
    rows = [
        f"{s},{float(v)!r},{0.5 + 0.01 * (s % 3)!r}" + (f",{extra}" if extra else "")
        for s, v in enumerate(loss)
    ]
    path.write_text("\n".join([head, *rows]) + "\n")


def _tree(root: Path) -> Path:
    rng = np.random.default_rng(7)
    for i in range(dg.PARALLEL_MIN_RUNS + 4):
        loss = 3.0 - np.linspace(0, 1, 60) + rng.standard_normal(60) * 0.02
        if i % 3 == 0:
            loss[30 + i] *= 4.0  # a spike at a different step per run
        # the same base name in two folders: the workers' names clash, the final ones do not
        _csv(root / f"sweep{i % 2}" / f"run{i // 2}" / "metrics.csv", loss, "0.001")
    for k in range(4):  # runs next to each other with one base name ("run"): one worker's batch
        loss = 2.5 - np.linspace(0, 1, 50) + rng.standard_normal(50) * 0.02
        loss[20 + 5 * k] *= 3.0
        _csv(root / f"clash{k}" / "run" / "metrics.csv", loss)
    # one run written by two loggers (CSV and JSONL, same values): merged into one run
    loss = 2.0 + rng.standard_normal(40) * 0.01
    _csv(root / "twice" / "log.csv", loss)
    (root / "twice" / "log.jsonl").write_text(
        "".join(
            json.dumps({"step": s, "loss": float(v), "grad_norm": 0.5 + 0.01 * (s % 3)}) + "\n"
            for s, v in enumerate(loss)
        )
    )
    bad = root / "broken" / "events.out.tfevents.1"  # no readable record: a reader error
    bad.parent.mkdir()
    bad.write_bytes(bytes(range(256)) * 4)
    # a run with ranks takes the pandas cut
    rows = [f"{s},{r},{2.0 - 0.01 * s + 0.001 * r!r}" for s in range(50) for r in (0, 1)]
    (root / "ranked").mkdir()
    (root / "ranked" / "metrics.csv").write_text("step,rank,loss\n" + "\n".join(rows) + "\n")
    return root


def _json(report) -> str:  # noqa: ANN001
    return render(report, "json")


def test_workers_give_the_serial_report_on_clashing_names_a_merged_copy_and_a_bad_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _tree(tmp_path / "runs")
    serial = dg.diagnose([root], jobs=1, cache=False)
    monkeypatch.setattr(sources, "PARALLEL_MIN_SNIFF", 1)  # files sniffed in the workers too
    parallel = dg.diagnose([root], jobs=2, cache=False)
    names = [r.name for r in serial.runs]
    assert len(names) == len(set(names)) >= dg.PARALLEL_MIN_RUNS + 2
    assert any("same run as" in w for r in serial.runs for w in r.warnings)  # the merge happened
    assert serial.findings and serial.skipped and any("broken" in e for e in serial.errors)
    assert parallel.findings == serial.findings and parallel.skipped == serial.skipped
    assert parallel.runs == serial.runs and parallel.errors == serial.errors
    assert parallel.remedies == serial.remedies
    assert parallel.table.frame.equals(serial.table.frame)
    assert _json(parallel) == _json(serial)
    for name in names:  # and the series the report keeps for plots
        a, b = serial.run_data(name), parallel.run_data(name)
        assert list(a.series) == list(b.series)
        for m in a.series:
            np.testing.assert_array_equal(a.series[m].values, b.series[m].values)


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/real_logs is not here (a user's clone)")
def test_workers_give_the_serial_report_on_every_real_log_and_sample_run() -> None:
    paths = [*sorted(p for p in REAL.iterdir() if p.is_dir()), SAMPLES]
    serial = dg.diagnose(paths, jobs=1, cache=False)
    parallel = dg.diagnose(paths, jobs=2, cache=False)
    assert len(serial.runs) > dg.PARALLEL_MIN_RUNS
    assert _json(parallel) == _json(serial)
