"""`stabdiag verify`: events, remedy changes and verdicts (pure), and a real replay on CPU of a
tiny run with an injected bad batch: the control must spike again, skipping the batch must not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from stabdiag.findings import Finding, Severity
from stabdiag.verify import Change, Event, Outcome, changes_for, data_index, find_events, judge


def _f(kind: str, start: int, end: int | None = None, sev: Severity = Severity.WARNING) -> Finding:
    return Finding(
        code="X",
        kind=kind,
        severity=sev,
        run="r",
        metric="train/loss",
        step_start=start,
        step_end=end if end is not None else start,
        message="m",
    )


def test_events_group_overlapping_findings_and_drop_info():
    events = find_events(
        [
            _f("grad-spike", 61),
            _f("loss-spike", 60),
            _f("loss-spike", 200),
            _f("stall", 100, 150, Severity.INFO),
        ]
    )
    assert [(e.start, e.end, e.kinds) for e in events] == [
        (60, 61, ("loss-spike", "grad-spike")),
        (200, 200, ("loss-spike",)),
    ]
    assert events[0].label == "loss-spike/grad-spike@60-61"


def _cfg(**kw):
    base = dict(
        lr=3e-3,
        min_lr=3e-4,
        grad_clip=1.0,
        beta2=0.99,
        z_loss=0.0,
        precision="fp16",
        warmup_steps=20,
        skip_batches=(),
    )
    return SimpleNamespace(**{**base, **kw})


def _rules(*ids):
    return lambda f: [SimpleNamespace(id=i) for i in ids]


def test_changes_map_remedies_to_mid_run_settings():
    ev = Event(60, 61, (_f("loss-spike", 60, 61),))
    made, untried = changes_for(
        ev,
        _cfg(),
        _rules(
            "skip-spike-updates",
            "clip",
            "lower-lr",
            "beta2",
            "z-loss",
            "bf16",
            "warmup",
            "qk-norm",
            "rewind",
        ),
    )
    by = {c.remedy: c for c in made}
    assert list(by) == ["skip-batches", "clip", "lower-lr", "beta2", "z-loss", "bf16"]
    assert by["skip-batches"].skip == ("60:61",)
    assert by["clip"].sets == ("grad_clip=0.5",)
    assert by["lower-lr"].sets == ("lr=0.0015",)
    assert by["bf16"].sets == ("precision=bf16",)
    assert any(u.startswith("warmup") for u in untried)  # step 60 is after a 20-step warm-up
    assert any(u.startswith("qk-norm") and "--proxy" in u for u in untried)


def test_changes_skip_data_batches_not_steps_and_respect_what_the_run_has():
    ev = Event(60, 60, (_f("loss-spike", 60),))
    made, untried = changes_for(
        ev,
        _cfg(skip_batches=("10:19",), beta2=0.95, precision="fp32"),
        _rules("rewind", "beta2", "bf16"),
    )
    assert [c.skip for c in made] == [("70:70",)]  # step 60 trains on batch 70 after 10 skipped
    assert data_index(60, ((10, 19),)) == 70
    assert len(untried) == 2


def test_judge_needs_the_control_to_reproduce_the_event():
    yes, no = Outcome("done", True), Outcome("done", False)
    assert judge(yes, no)[0] == "fixed"
    assert judge(yes, yes)[0] == "not fixed"
    assert judge(no, no)[0] == "inconclusive"
    assert judge(yes, Outcome("crashed", None, error="boom")) == (
        "inconclusive",
        "the branch crashed: boom",
    )
    assert Change("control", "no change").sets == ()


# ----------------------------------------------------------------------------- real replay


@pytest.fixture(scope="module")
def spiky_run(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from stabdiag.train import resolve, train

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("verify")
    cfg = resolve(
        "tiny",
        "stable",
        None,
        [
            f"out_dir={out}",
            "run_name=spiky",
            "steps=45",
            "inject=bad_batch@30",
            "checkpoint_interval=10",
            "threads=1",
            "data_max_bytes=200000",
            "eval_interval=45",
            "warmup_steps=5",
        ],
    )
    train(cfg)
    yield out / "spiky"
    torch.set_num_threads(before)


@pytest.mark.slow
def test_verify_replays_a_bad_batch_control_spikes_skip_fixes(spiky_run):
    from stabdiag.verify import verify

    seen: list[tuple[str, int, int]] = []
    result = verify(spiky_run, max_remedies=2, progress=lambda *a: seen.append(a))
    assert not result.interrupted
    (ev,) = [e for e in result.events if e.event.start == 30]
    assert ev.control is not None and ev.control.recurred is True  # the bad batch spikes again
    by = {t.change.remedy: t for t in ev.trials}
    assert by["skip-batches"].verdict == "fixed" and by["skip-batches"].outcome.recurred is False
    assert by["skip-batches"].changes["skip_batches"] == [[], ["30:30"]]
    # the loss measured on the bad batch itself is the spike: clipping the update cannot remove it
    assert by["clip"].verdict == "not fixed"
    assert by["skip-batches"].outcome.loss_at_start < 0.6 * ev.control.loss_at_start
    assert all(t.checkpoint_step == 30 for t in ev.trials) and ev.control.steps == 15
    assert {name for name, _, _ in seen} == {
        f"spiky-verify-s30-{r}" for r in ("control", "skip-batches", "clip")
    }
    assert "skipping batch 30 removes it" in ev.verdict_line and "does not" in ev.verdict_line

    # the CLI: a re-run reuses the finished branches; JSON has the documented trial keys
    from typer.testing import CliRunner

    from stabdiag.cli import app

    res = CliRunner().invoke(app, ["verify", str(spiky_run), "--remedies", "2", "--format", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert {"finding", "remedy", "changes", "branch", "resolved", "before", "after"} <= set(
        data["trials"][0]
    )
    assert {t["remedy"]: t["resolved"] for t in data["trials"]} == {
        "skip-batches": True,
        "clip": False,
    }
    assert all(t["after"]["status"] == "reused" for t in data["trials"])
    png = spiky_run.parent / "overlay.png"
    md = CliRunner().invoke(
        app,
        ["verify", str(spiky_run), "--remedies", "2", "--format", "markdown", "--plot", str(png)],
    )
    assert md.exit_code == 0 and "| skip-batches |" in md.stdout and "**Verdict:**" in md.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a branch that cannot run (its directory is taken by something else) is reported as such
    # and the others go on
    taken = spiky_run.parent / "spiky-verify-s30-clip"
    shutil.rmtree(taken)
    taken.mkdir()
    (taken / "notes.txt").write_text("someone else's")
    again = verify(spiky_run, max_remedies=2)
    by = {t.change.remedy: t for t in again.events[0].trials}
    assert by["clip"].outcome.status == "crashed" and by["clip"].verdict == "inconclusive"
    assert "not an unfinished verify branch" in by["clip"].reason
    assert (taken / "notes.txt").is_file()  # never deleted
    assert by["skip-batches"].verdict == "fixed" and by["skip-batches"].outcome.status == "reused"


def test_verify_without_a_checkpoint_before_the_onset_says_so(spiky_run, tmp_path):
    from typer.testing import CliRunner

    from stabdiag.cli import app

    run = tmp_path / "late"
    shutil.copytree(spiky_run, run, ignore=shutil.ignore_patterns("*.pt"))
    (run / "checkpoints" / "step-00000040.pt").write_bytes(b"")  # only one after the spike
    res = CliRunner().invoke(app, ["verify", str(run)])
    assert res.exit_code == 2
    assert "checkpoint at or before step 30" in res.output and "--proxy" in res.output
    assert not any(p.name.startswith("late-verify") for p in tmp_path.iterdir())


def test_verify_refuses_a_directory_that_is_not_a_train_run(tmp_path: Path):
    from typer.testing import CliRunner

    from stabdiag.cli import app

    res = CliRunner().invoke(app, ["verify", str(tmp_path)])
    assert res.exit_code == 2 and "stabdiag train run directory" in res.output
    res = CliRunner().invoke(app, ["verify", str(tmp_path), "--proxy"])
    assert res.exit_code == 2 and str(tmp_path) in res.output and "Traceback" not in res.output


# ----------------------------------------------------------------------------- --proxy


def test_proxy_settings_carry_the_runs_config_over_as_fractions():
    from stabdiag.verify_proxy import proxy_settings

    conf = {
        "lr": 1.0,
        "warmup_steps": 250,
        "total_steps": 5000,
        "clip": 1.0,
        "beta2": 0.999,
        "schedule": "cosine",
        "precision": "bf16",
        "norm_placement": "post",
        "qk_norm": False,
    }
    got = proxy_settings(SimpleNamespace(get=conf.get), 200)
    assert got == [
        "lr=1",
        "min_lr=0.1",
        "warmup_steps=10",
        "decay=cosine",
        "grad_clip=1",
        "beta2=0.999",
        "precision=bf16",
        "norm_placement=post",
        "qk_norm=false",
    ]
    assert proxy_settings(None, 200) == []


def test_proxy_changes_may_change_the_model_but_not_skip_batches():
    from stabdiag.verify_proxy import proxy_changes

    ev = Event(100, 3910, (_f("divergence", 100, 3910, Severity.ERROR),))
    base = {
        "lr": 1.0,
        "min_lr": 0.0,
        "grad_clip": 1.0,
        "beta2": 0.999,
        "z_loss": 0.0,
        "qk_norm": False,
        "norm_placement": "pre",
        "precision": "fp32",
        "warmup_steps": 10,
        "steps": 200,
    }
    made, untried = proxy_changes(
        ev, base, _rules("rewind", "lower-lr", "qk-norm", "z-loss", "beta2")
    )
    assert [(c.remedy, c.sets) for c in made] == [
        ("lower-lr", ("lr=0.1", "min_lr=0")),  # an error-level event: 10x
        ("qk-norm", ("qk_norm=true",)),
        ("z-loss", ("z_loss=1e-4",)),
        ("beta2", ("beta2=0.95",)),
    ]
    assert untried and untried[0].startswith("rewind")


def test_proxy_that_does_not_reproduce_says_so(tmp_path):
    pytest.importorskip("torch")
    from stabdiag.verify_proxy import verify_proxy

    log = tmp_path / "ext" / "metrics.csv"
    log.parent.mkdir()
    rows = ["step,train/loss"] + [
        f"{s},{(9.0 if s == 60 else 3.0 - s / 100):.4f}" for s in range(100)
    ]
    log.write_text("\n".join(rows) + "\n")
    res = verify_proxy(log.parent, tmp_path / "proxy", steps=15, seeds=1)
    assert "loss-spike" in res.kinds
    assert res.verdict.startswith("not reproduced at small scale") and res.trials == ()
    assert res.baseline is not None and res.baseline.hits == (False,)
    assert (tmp_path / "proxy" / "ext-proxy-asis-s0" / "run.json").is_file()


def test_proxy_on_a_healthy_real_run_has_nothing_to_verify():
    run = Path(__file__).resolve().parents[2] / "shared" / "real_logs" / "cs336_tinystories_lr3e-3"
    if not run.is_dir():
        pytest.skip("../shared/real_logs is not here")
    from stabdiag.verify_proxy import verify_proxy

    res = verify_proxy(run, Path("/nonexistent-never-written"), steps=20)
    assert res.verdict.startswith("nothing to verify") and res.baseline is None
