"""sweep --backend ray on a local 2-CPU Ray cluster: the same numbers as the local backend,
results through Ray (not the filesystem), failed and dead workers, and the missing-extra error."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stabdiag.cli import app
from stabdiag.errors import TrainError
from stabdiag.sweep import build_spec, parse_setting

runner = CliRunner()
SMALL = [
    "steps=20",
    "n_embd=32",
    "block_size=32",
    "batch_size=8",
    "eval_interval=10",
    "log_interval=5",
    "data_max_bytes=100000",
    "warmup_steps=3",
    "tensorboard=false",
]
NUMBERS = (
    "final_loss",
    "final_val_loss",
    "best_loss",
    "initial_loss",
    "max_attn_logit",
    "logz_drift",
    "max_abs_logz",
    "steps_done",
    "stop_reason",
    "findings",
)


@pytest.fixture(scope="module")
def ray_cluster():
    pytest.importorskip("torch")
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def test_without_ray_the_error_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    res = runner.invoke(
        app, ["sweep", "--lrs", "1e-3", "--backend", "ray", "--out", str(tmp_path / "s")]
    )
    assert res.exit_code == 2, res.output
    assert "stabdiag[ray]" in res.stderr and "Traceback" not in res.stderr
    from stabdiag.sweep.ray_backend import RayBackend

    with pytest.raises(TrainError, match=r"pip install 'stabdiag\[ray\]'"):
        RayBackend.connect(None, ())


def _sweep(out: Path, *extra: str) -> object:
    args = [
        "sweep",
        "--preset",
        "tiny",
        "--lrs",
        "3e-2",
        "--seeds",
        "2",
        "--setting",
        "baseline",
        "--setting",
        "qk_norm=true",
        "--out",
        str(out),
        "--cpus-per-cell",
        "1",
        "--format",
        "json",
        "--output",
        str(out.parent / f"{out.name}.json"),
    ]
    for item in SMALL:
        args += ["--set", item]
    return runner.invoke(app, [*args, *extra])


@pytest.mark.slow
def test_local_and_ray_give_the_same_numbers_then_ray_resumes(ray_cluster, tmp_path):
    local = _sweep(tmp_path / "local", "-j", "2")
    assert local.exit_code == 0, local.output
    on_ray = _sweep(tmp_path / "ray", "--backend", "ray")
    assert on_ray.exit_code == 0, on_ray.output
    assert "on a local Ray cluster (2 CPUs, 0 GPUs" in on_ray.stderr
    a = json.loads((tmp_path / "local.json").read_text())
    b = json.loads((tmp_path / "ray.json").read_text())
    assert a["backend"] == "local" and b["backend"] == "ray"
    assert len(a["cells"]) == len(b["cells"]) == 4
    for ca, cb in zip(a["cells"], b["cells"], strict=True):
        assert (ca["setting"], ca["lr"], ca["seed"]) == (cb["setting"], cb["lr"], cb["seed"])
        assert {k: ca[k] for k in NUMBERS} == {k: cb[k] for k in NUMBERS}
        assert cb["device"].endswith("/cpu") and cb["run_dir"].startswith(str(tmp_path / "ray"))
    assert a["settings"] == b["settings"] and a["points"] == b["points"]
    seeds = {c["seed"]: c["final_loss"] for c in a["cells"] if c["setting"] == "baseline"}
    assert seeds[0] != seeds[1]  # the seed changes init and data order
    # The driver wrote each cell's run directory from what the task sent back.
    cell = tmp_path / "ray" / "baseline__lr0.03__s1"
    assert {p.name for p in cell.iterdir()} >= {"metrics.csv", "config.json", "cell.json"}
    assert not (cell / "checkpoints").exists()
    assert json.loads((cell / "config.json").read_text())["out_dir"] == str(tmp_path / "ray")
    assert (cell / "metrics.csv").read_text().count("\n") > 20
    again = _sweep(tmp_path / "ray", "--backend", "ray")
    assert again.exit_code == 0 and "4 already finished, 0 to train" in again.stderr


def _broken_body(cell, threads):
    """A task body for the failure test: seed 1 kills its worker, lr 1e-2 raises, others train."""
    from stabdiag.sweep.ray_backend import _ray_train

    if cell.seed == 1:
        os._exit(3)
    if cell.lr == 1e-2:
        raise ValueError(f"no good at lr {cell.lr}")
    return _ray_train(cell, threads)


@pytest.mark.slow
def test_a_dead_or_failing_task_marks_its_cell_failed_and_the_rest_goes_on(ray_cluster, tmp_path):
    from stabdiag.sweep.ray_backend import RayBackend
    from stabdiag.sweep.runner import load_finished

    spec = build_spec(
        preset="tiny",
        recipe="stable",
        lrs=(1e-3, 1e-2),
        out_dir=tmp_path,
        settings=[parse_setting("baseline")],
        common=SMALL,
        seeds=2,
    )
    cells = spec.cells  # (1e-3, s0), (1e-3, s1), (1e-2, s0), (1e-2, s1)
    # Ray workers cannot import this test module: ship _broken_body by value.
    ray_cluster.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    backend = RayBackend.connect(None, cells)
    assert not backend.owns  # the fixture's cluster: joined, not started (nor shut down)
    results = {}
    backend.run(cells, range(len(cells)), results.__setitem__, body=_broken_body)
    assert sorted(results) == [0, 1, 2, 3]
    assert not results[0].failed and results[0].final_loss > 0
    assert load_finished(cells[0]) is not None  # saved: a re-run will not train it again
    assert results[2].error == "ValueError: no good at lr 0.01"
    for i in (1, 3):  # the worker died (retried once by Ray, died again)
        assert results[i].failed and "WorkerCrashedError" in results[i].error, results[i].error
        assert load_finished(cells[i]) is None  # not saved: a re-run retries it
    assert ray_cluster.is_initialized()
