"""stabdiag sweep: grid parsing, LR sensitivity on hand-made numbers, a 2 x 2 CPU sweep, resume."""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stabdiag.cli import app
from stabdiag.errors import ConfigError
from stabdiag.sweep import build_spec, lr_sensitivity, parse_lr_range, parse_lrs, parse_setting
from stabdiag.sweep.results import best_loss, final_loss

runner = CliRunner()

# --- pure numbers ---------------------------------------------------------------------------


def test_lr_sensitivity_caps_at_initial_loss_and_counts_diverged_cells_as_l0():
    # capped: [3.0, 2.5, 5.5 (nan), 5.5 (6.0 > l0)]; l* = 2.5; mean(0.5, 0, 3, 3) = 1.625
    assert lr_sensitivity([3.0, 2.5, math.nan, 6.0], [5.5] * 4) == pytest.approx(1.625)
    assert lr_sensitivity([2.0, 2.0, 2.0], [5.5, 5.5, 5.5]) == 0.0
    assert lr_sensitivity([3.0], [5.0]) == 0.0
    # l0 differs per cell: each cell is capped by its own initial loss
    assert lr_sensitivity([4.0, 1.0], [3.0, 5.0]) == pytest.approx((2.0 + 0.0) / 2)


def test_lr_sensitivity_undefined_without_a_finite_cell():
    assert math.isnan(lr_sensitivity([math.nan, math.inf], [5.5, 5.5]))
    with pytest.raises(ValueError):
        lr_sensitivity([1.0, 2.0], [5.0])


def test_final_and_best_loss():
    losses = [5.0] * 10 + [3.0] * 9 + [4.0]  # window = 10% of 20 = 2 steps
    assert final_loss(losses) == pytest.approx(3.5)
    assert best_loss(losses) == pytest.approx(3.0)
    assert math.isnan(final_loss([5.0, 4.0, math.nan]))
    assert best_loss([5.0, math.nan, 3.0]) == pytest.approx(3.0)
    assert math.isnan(final_loss([]))


# --- grid spec ------------------------------------------------------------------------------


def test_parse_lrs_and_range():
    assert parse_lrs("1e-2, 1e-3,1e-2") == (1e-3, 1e-2)
    assert parse_lr_range("1e-4:1e-1:4") == pytest.approx((1e-4, 1e-3, 1e-2, 1e-1))
    assert len(parse_lr_range("1e-4:1e-1:7")) == 7
    for bad in ("1e-1:1e-4:3", "1e-4:1e-1:1", "1e-4:1e-1", "a:b:c", "0:1:3"):
        with pytest.raises(ConfigError):
            parse_lr_range(bad)
    for bad in ("", "x", "-1e-3", "0"):
        with pytest.raises(ConfigError):
            parse_lrs(bad)


def test_parse_setting():
    assert parse_setting("baseline").overrides == ()
    s = parse_setting("qk_norm=true,z_loss=1e-4")
    assert s.name == "qk_norm=true,z_loss=1e-4" and s.overrides == ("qk_norm=true", "z_loss=1e-4")
    named = parse_setting("stab:qk_norm=true,z_loss=1e-4")
    assert named.name == "stab" and named.overrides == ("qk_norm=true", "z_loss=1e-4")
    inject = parse_setting("inject=bad_batch@5")  # ':'-free; a ':' after '=' is not a label
    assert inject.overrides == ("inject=bad_batch@5",)
    for bad in ("qk_norm", "lr=1e-3", "a b:qk_norm=true"):
        with pytest.raises(ConfigError):
            parse_setting(bad)


def test_build_spec_resolves_every_cell_and_scales_min_lr(tmp_path):
    spec = build_spec(
        preset="tiny",
        recipe="stable",
        lrs=(1e-4, 1e-2),
        out_dir=tmp_path,
        settings=[parse_setting("baseline"), parse_setting("qk_norm=true")],
        common=["steps=50"],
    )
    assert [(c.setting, c.lr) for c in spec.cells] == [
        ("baseline", 1e-4),
        ("baseline", 1e-2),
        ("qk_norm=true", 1e-4),
        ("qk_norm=true", 1e-2),
    ]
    c = spec.cells[2]
    assert c.config.qk_norm and c.config.lr == 1e-4 and c.config.steps == 50
    assert c.config.min_lr == pytest.approx(1e-5)  # the recipe's min_lr/lr = 0.1, not 3e-4 > lr
    assert len({cell.run_dir for cell in spec.cells}) == 4
    with pytest.raises(ConfigError, match="did you mean 'qk_norm'"):
        build_spec(
            preset="tiny",
            recipe="stable",
            lrs=(1e-3,),
            out_dir=tmp_path,
            settings=[parse_setting("qk_nrm=true")],
            common=[],
        )
    with pytest.raises(ConfigError, match="twice"):
        build_spec(
            preset="tiny",
            recipe="stable",
            lrs=(1e-3,),
            out_dir=tmp_path,
            settings=[parse_setting("baseline")] * 2,
            common=[],
        )


@pytest.mark.parametrize(
    "args",
    [
        ["--lrs", "1e-3,abc"],
        ["--lr-range", "1e-1:1e-4:3"],
        ["--lrs", "1e-3", "--lr-range", "1e-4:1e-1:3"],
        [],
        ["--lrs", "1e-3", "--setting", "qk_norm"],
        ["--lrs", "1e-3", "--set", "lr=1"],
        ["--lrs", "1e-3", "--format", "html"],
    ],
)
def test_bad_grid_spec_exits_2_with_one_line(args, tmp_path):
    res = runner.invoke(app, ["sweep", "--out", str(tmp_path / "s"), *args])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in res.stderr
    assert not (tmp_path / "s").exists()  # nothing trained


# --- end to end -----------------------------------------------------------------------------

SMALL = [
    "steps=40",
    "n_embd=32",
    "block_size=32",
    "batch_size=8",
    "eval_interval=20",
    "log_interval=5",
    "data_max_bytes=200000",
    "warmup_steps=5",
    "tensorboard=false",
]


def _sweep(out: Path, *extra: str) -> object:
    pytest.importorskip("torch")
    args = [
        "sweep",
        "--preset",
        "tiny",
        "--lrs",
        "1e-3,3e-2",
        "--setting",
        "baseline",
        "--setting",
        "qk_norm=true",
        "--out",
        str(out),
    ]
    for item in SMALL:
        args += ["--set", item]
    return runner.invoke(app, [*args, *extra])


@pytest.mark.slow  # trains 4 cells in 2 spawned workers, then resumes: ~30-60 s
def test_two_by_two_sweep_then_resume(tmp_path):
    out = tmp_path / "sweep"
    res = _sweep(out, "--format", "json", "-j", "2")  # two spawned worker processes
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["schema_version"] == 2 and doc["kind"] == "sweep" and doc["lrs"] == [1e-3, 3e-2]
    assert "min(final loss, l0)" in doc["definitions"]["lr_sensitivity"]
    assert [s["name"] for s in doc["settings"]] == ["baseline", "qk_norm=true"]
    assert len(doc["cells"]) == 4
    for cell in doc["cells"]:
        assert {
            "setting",
            "lr",
            "final_loss",
            "best_loss",
            "initial_loss",
            "max_attn_logit",
            "logz_drift",
            "findings",
            "run_dir",
            "stop_reason",
        } <= set(cell)
        assert cell["initial_loss"] == pytest.approx(math.log(256), abs=0.3)  # bytes at init
        assert 0 < cell["best_loss"] <= cell["initial_loss"]
        assert cell["max_attn_logit"] > 0 and cell["steps_done"] == 40 and not cell["reused"]
        assert isinstance(cell["findings"], dict)
    for s in doc["settings"]:
        cells = [c for c in doc["cells"] if c["setting"] == s["name"]]
        expect = lr_sensitivity(
            [c["final_loss"] if c["final_loss"] is not None else math.nan for c in cells],
            [c["initial_loss"] for c in cells],
        )
        assert s["lr_sensitivity"] == pytest.approx(expect)
    for name in ("sweep.json", "sweep.png", "sweep.svg"):
        assert (out / name).stat().st_size > 1000
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "sweep.json").read_text())["cells"] == doc["cells"]

    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.csv")}
    assert len(stamps) == 4
    again = _sweep(out)  # same grid, text table: every cell is found finished
    assert again.exit_code == 0, again.output
    assert "4 already finished, 0 to train" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.csv")} == stamps
    for word in ("LR sensitivity", "baseline", "qk_norm=true", "max attn", "final loss:"):
        assert word in again.stdout
    md = _sweep(out, "--format", "markdown", "--output", str(tmp_path / "r.md"))
    assert md.exit_code == 0
    text = (tmp_path / "r.md").read_text()
    assert "| setting | LR sensitivity |" in text and "sweep.png" in text


def test_changed_config_is_not_reused(tmp_path):
    from stabdiag.sweep.results import CellResult
    from stabdiag.sweep.runner import _save, load_finished

    spec = build_spec(
        preset="tiny",
        recipe="stable",
        lrs=(1e-3,),
        out_dir=tmp_path,
        settings=[parse_setting("baseline")],
        common=["steps=40"],
    )
    cell = spec.cells[0]
    cell.run_dir.mkdir(parents=True)
    done = CellResult(
        setting="baseline",
        lr=1e-3,
        run_dir=str(cell.run_dir),
        final_loss=3.0,
        final_val_loss=3.1,
        best_loss=2.9,
        initial_loss=5.5,
        max_attn_logit=2.0,
        logz_drift=-0.1,
        max_abs_logz=5.6,
        steps_done=40,
        stop_reason="completed",
        findings=(("loss-spike", "warning"),),
    )
    _save(cell, done)
    found = load_finished(cell)
    assert found is not None and found.reused and found.findings == done.findings
    assert found.final_loss == 3.0
    assert load_finished(replace(cell, config=replace(cell.config, steps=41))) is None
    moved = replace(cell, config=replace(cell.config, out_dir=os.fspath(tmp_path)))
    assert load_finished(moved) is not None  # out_dir is not part of a cell's identity


# --- seeds: spread, interval, comparison ----------------------------------------------------


def _cell(setting, lr, seed, final, *, l0=5.5, attn=2.0, error="", findings=()):
    from stabdiag.sweep.results import CellResult, failed_cell

    if error:
        return failed_cell(setting, lr, seed, "", error)
    return CellResult(
        setting=setting,
        lr=lr,
        run_dir="",
        final_loss=final,
        final_val_loss=final,
        best_loss=final - 0.1,
        initial_loss=l0,
        max_attn_logit=attn,
        logz_drift=0.0,
        max_abs_logz=5.0,
        steps_done=10,
        stop_reason="completed",
        findings=findings,
        seed=seed,
    )


def test_build_spec_repeats_each_cell_per_seed_from_the_base_seed(tmp_path):
    spec = build_spec(
        preset="tiny",
        recipe="stable",
        lrs=(1e-3, 1e-2),
        out_dir=tmp_path,
        settings=[parse_setting("baseline")],
        common=["seed=7"],
        seeds=3,
    )
    assert spec.seeds == (7, 8, 9)
    assert [(c.lr, c.seed) for c in spec.cells] == [
        (1e-3, 7),
        (1e-3, 8),
        (1e-3, 9),
        (1e-2, 7),
        (1e-2, 8),
        (1e-2, 9),
    ]
    assert all(c.config.seed == c.seed for c in spec.cells)
    assert len({c.run_dir for c in spec.cells}) == 6
    assert spec.cells[1].run_dir.name == "baseline__lr0.001__s8"
    with pytest.raises(ConfigError, match="--seeds"):
        parse_setting("seed=3")
    with pytest.raises(ConfigError, match="at least 1"):
        build_spec(
            preset="tiny",
            recipe="stable",
            lrs=(1e-3,),
            out_dir=tmp_path,
            settings=[parse_setting("baseline")],
            common=[],
            seeds=0,
        )


def test_per_seed_sensitivity_interval_and_point_spread():
    from stabdiag.sweep.results import summarize

    lrs = (1e-3, 1e-2)
    cells = [
        _cell("a", 1e-3, 0, 3.0),
        _cell("a", 1e-2, 0, 2.0),  # seed 0: (1 + 0) / 2 = 0.5
        _cell("a", 1e-3, 1, 3.4),
        _cell("a", 1e-2, 1, 2.2),  # seed 1: 0.6
        _cell("a", 1e-3, 2, 2.6),
        _cell("a", 1e-2, 2, math.nan),
    ]  # seed 2: diverged at l0
    points, (s,), comps = summarize([("a", ())], lrs, cells)
    assert dict(s.seed_sensitivities) == pytest.approx({0: 0.5, 1: 0.6, 2: (0 + 2.9) / 2})
    assert s.lr_sensitivity == pytest.approx((0.5 + 0.6 + 1.45) / 3)
    assert (s.sensitivity_lo, s.sensitivity_hi) == pytest.approx((0.5, 1.45))
    # best LR: lowest mean final loss among points whose seeds all finished finite
    assert s.best_lr == 1e-3 and s.best_final_loss == pytest.approx(3.0)
    assert (s.best_final_lo, s.best_final_hi) == pytest.approx((2.6, 3.4))
    lo, hi = points
    assert lo.final_loss.mean == pytest.approx(3.0) and lo.final_loss.n == 3
    assert lo.final_loss.std == pytest.approx(0.4)  # sample std of 2.6, 3.0, 3.4
    assert hi.diverged == 1 and hi.final_loss.n == 2 and hi.final_loss.mean == pytest.approx(2.1)
    assert hi.capped_final.hi == pytest.approx(5.5)  # the diverged seed counts at l0
    assert comps == ()  # one setting: nothing to compare


def test_a_difference_within_the_seed_spread_is_reported_as_such():
    from stabdiag.sweep.results import summarize

    def grid(name, finals):  # finals[seed] = (final at lr1, final at lr2)
        return [
            _cell(name, lr, seed, f)
            for seed, pair in enumerate(finals)
            for lr, f in zip((1e-3, 1e-2), pair, strict=True)
        ]

    stable = grid("qk", [(2.1, 2.0), (2.2, 2.0), (2.1, 2.0)])  # 0.05, 0.1, 0.05
    noisy = grid("base", [(2.6, 2.0), (2.1, 2.0), (3.0, 2.0)])  # 0.3, 0.05, 0.5: overlaps
    clear = grid("post", [(3.5, 2.0), (3.9, 2.0), (3.6, 2.0)])  # 0.75, 0.95, 0.8
    _, _, (c1, c2) = summarize(
        [("base", ()), ("qk", ()), ("post", ())], (1e-3, 1e-2), noisy + stable + clear
    )
    assert (c1.lower, c1.higher, c1.resolved) == ("qk", "base", False)
    assert "within the seed spread" in c1.verdict
    assert (c1.paired_wins, c1.paired_seeds) == (2, 3)  # seed 1: qk 0.1 > base 0.05
    assert (c2.lower, c2.higher, c2.resolved) == ("base", "post", True)
    assert "larger than the seed spread" in c2.verdict
    _, _, (one,) = summarize(
        [("qk", ()), ("post", ())], (1e-3, 1e-2), [c for c in stable + clear if c.seed == 0]
    )
    assert one.resolved is None and "one seed" in one.verdict


def test_failed_cells_count_for_nothing_and_drop_their_seed_from_the_interval(tmp_path):
    from stabdiag.render.sweep import render_sweep
    from stabdiag.sweep import SweepResult, save_outputs, summarize

    cells = [
        _cell("a", 1e-3, 0, 3.0),
        _cell("a", 1e-2, 0, 2.0),
        _cell("a", 1e-3, 1, 3.2),
        _cell("a", 1e-2, 1, 0.0, error="TrainError: boom"),
    ]
    points, sums, comps = summarize([("a", ("qk_norm=true",))], (1e-3, 1e-2), cells)
    (s,) = sums
    assert dict(s.seed_sensitivities) == {0: pytest.approx(0.5)} and s.failed_cells == 1
    assert points[1].seeds == 1 and points[1].failed == 1 and not cells[3].diverged
    res = SweepResult(
        preset="tiny",
        recipe="stable",
        lrs=(1e-3, 1e-2),
        common=(),
        out_dir=str(tmp_path),
        device="cpu",
        cells=tuple(cells),
        settings=sums,
        wall_s=1.0,
        seeds=(0, 1),
        points=points,
        comparisons=comps,
    )
    saved = save_outputs(res, tmp_path)
    doc = json.loads((tmp_path / "sweep.json").read_text())
    assert doc["failed_cells"] == 1 and doc["cells"][3]["error"] == "TrainError: boom"
    assert doc["points"][1]["failed"] == 1 and doc["settings"][0]["seed_sensitivities"] == {
        "0": 0.5
    }
    assert saved.seeds == (0, 1) and saved.failed == (cells[3],)
    text = render_sweep(saved, "text")
    assert "failed cells (1; re-run to retry)" in text and "seed 1: TrainError: boom" in text
    assert "0.500–0.500" not in text and "(1 seed)" in text
    md_text = render_sweep(saved, "markdown")
    assert "**Failed cells** (1" in md_text and "| min–max |" in md_text


@pytest.mark.parametrize(
    "args,match",
    [
        (["--backend", "slurm"], "--backend 'slurm'"),
        (["--ray-address", "auto"], "--ray-address needs --backend ray"),
        (["--devices", "tpu:0"], "--devices"),
        (["--backend", "ray", "--devices", "cpu"], "--devices is for --backend local"),
    ],
)
def test_bad_backend_or_devices_exit_2_before_training(args, match, tmp_path):
    pytest.importorskip("torch")
    res = runner.invoke(app, ["sweep", "--lrs", "1e-3", "--out", str(tmp_path / "s"), *args])
    assert res.exit_code == 2, res.output
    assert match in res.stderr and "Traceback" not in res.stderr
    assert not list((tmp_path / "s").glob("*/metrics.csv"))


def test_seeds_and_a_failing_setting_then_retry(tmp_path):
    """One setting reads a data file that is missing: its cells fail with the reason, the others
    train; once the file exists a re-run trains only the failed cells."""
    out, corpus = tmp_path / "sweep", tmp_path / "corpus.txt"
    res = _sweep_seeds(out, corpus)
    assert res.exit_code == 1, res.output
    assert "2 of 4 cells failed" in res.stderr and "run the same command again" in res.stderr
    doc = json.loads((out / "sweep.json").read_text())
    failed = [c for c in doc["cells"] if c["error"]]
    assert [(c["setting"], c["seed"]) for c in failed] == [("file", 0), ("file", 1)]
    assert all("cannot read data file" in c["error"] for c in failed)
    ok = [c for c in doc["cells"] if not c["error"]]
    assert [c["seed"] for c in ok] == [0, 1] and ok[0]["final_loss"] != ok[1]["final_loss"]
    base = doc["settings"][0]
    assert base["name"] == "baseline" and base["failed_cells"] == 0
    assert doc["settings"][1]["failed_cells"] == 2 and doc["settings"][1]["lr_sensitivity"] is None
    assert doc["points"][0]["final_loss"]["n"] == 2 and doc["points"][0]["final_loss"]["std"] > 0
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("baseline*/metrics.csv")}

    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    again = _sweep_seeds(out, corpus)
    assert again.exit_code == 0, again.output
    assert "2 already finished, 2 to train" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in out.glob("baseline*/metrics.csv")} == stamps
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["failed_cells"] == 0 and all(c["final_loss"] for c in doc["cells"])


def _sweep_seeds(out: Path, corpus: Path) -> object:
    pytest.importorskip("torch")
    args = [
        "sweep",
        "--preset",
        "tiny",
        "--lrs",
        "1e-2",
        "--seeds",
        "2",
        "--setting",
        "baseline",
        "--setting",
        f"file:data={corpus}",
        "--out",
        str(out),
        "-j",
        "1",
        "--format",
        "json",
        "--output",
        str(out.parent / "report.json"),
    ]
    for item in [*SMALL, "steps=20", "eval_interval=10"]:
        args += ["--set", item]
    return runner.invoke(app, args)


def _die_on_seed_1(cell, device):
    """A worker for the pool test: seed 1 kills its process, seed 2 raises, others 'train'."""
    if cell.seed == 1:
        os._exit(3)
    if cell.seed == 2:
        raise RuntimeError("CUDA out of memory (pretend)")
    return _cell(cell.setting, cell.lr, cell.seed, 3.0)


@pytest.mark.slow  # spawns worker processes that import torch: ~20 s on a loaded 2-core box
def test_a_worker_that_dies_fails_its_cell_and_its_slot_is_replaced(tmp_path):
    from stabdiag.sweep.devices import Slot
    from stabdiag.sweep.runner import _run_slots

    spec = build_spec(
        preset="tiny",
        recipe="stable",
        lrs=(1e-3,),
        out_dir=tmp_path,
        settings=[parse_setting("baseline")],
        common=[],
        seeds=5,
    )
    results = {}
    _run_slots(
        spec.cells,
        list(range(5)),
        [Slot("cpu", 1), Slot("cpu", 1)],
        results.__setitem__,
        worker=_die_on_seed_1,
    )
    assert sorted(results) == [0, 1, 2, 3, 4]
    assert "worker process died" in results[1].error
    assert results[2].error == "RuntimeError: CUDA out of memory (pretend)"
    for i in (0, 3, 4):  # cells after the death still ran, on the replaced worker too
        assert not results[i].failed and results[i].final_loss == 3.0
