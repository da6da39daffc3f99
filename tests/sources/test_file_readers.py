"""HF trainer_state, Lightning CSV, generic CSV (wide/long, W&B panel) and JSONL readers."""

from __future__ import annotations

import json
import math

from sources_util import series_of

from stabdiag import sources


def _state(global_step: int, history: list[dict]) -> str:
    # Written the way HF does it: json.dumps(indent=2, sort_keys=True) -> bare NaN/Infinity.
    return json.dumps(
        {"global_step": global_step, "log_history": history, "max_steps": 100},
        indent=2,
        sort_keys=True,
    )


HISTORY = [
    {"epoch": 0.1, "grad_norm": 1.5, "learning_rate": 1e-4, "loss": 2.0, "step": 10},
    {"epoch": 0.2, "grad_norm": float("nan"), "learning_rate": 1e-4, "loss": 0.0, "step": 20},
    {"epoch": 0.2, "eval_loss": 1.9, "eval_runtime": 3.0, "step": 20},
    {
        "epoch": 0.3,
        "grad_norm": float("inf"),
        "lr": 9e-5,
        "loss": 1.8,
        "step": 30,
        "remaining_time": "1h:02m",
    },
    {"epoch": 0.3, "step": 30, "total_flos": 1e12, "train_loss": 1.2, "train_runtime": 10.0},
]


def test_hf_trainer_state(tmp_path):
    out = tmp_path / "my-model"
    out.mkdir()
    (out / "trainer_state.json").write_text(_state(30, HISTORY))
    res = sources.load([tmp_path])
    (run,) = res.runs
    assert run.name == "my-model" and run.format == "hf-trainer-state"
    steps, vals = series_of(res, "my-model", "train/loss")
    assert steps == [10, 20, 30] and vals == [2.0, 0.0, 1.8]  # summary train_loss not a point
    _, gn = series_of(res, "my-model", "train/grad_norm")
    assert math.isnan(gn[1]) and gn[2] == math.inf
    assert series_of(res, "my-model", "val/loss") == ([20], [1.9])
    assert run.meta["summary"]["train_loss"] == 1.2 and run.meta["max_steps"] == 100
    assert "remaining_time" in run.meta["non_numeric_keys"]
    assert res.table.series("my-model", "meta/restart").steps.size == 0  # epoch repeats are fine


def test_hf_checkpoints_are_one_run_newest_wins(tmp_path):
    out = tmp_path / "out"
    for n in (10, 20):
        (out / f"checkpoint-{n}").mkdir(parents=True)
        (out / f"checkpoint-{n}" / "trainer_state.json").write_text(
            _state(n, [h for h in HISTORY if h["step"] <= n])
        )
    (out / "checkpoint-20" / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    res = sources.load([out])
    assert [r.name for r in res.runs] == ["out"]
    steps, _ = series_of(res, "out", "train/loss")
    assert steps == [10, 20]  # never double counted
    assert "checkpoint-20" in res.runs[0].path
    assert any("other trainer_state.json" in w for w in res.runs[0].warnings)


def test_hf_tensorboard_mirror_is_not_a_second_run(tmp_path):
    from sources_util import write_torch

    out = tmp_path / "out"
    out.mkdir()
    (out / "trainer_state.json").write_text(_state(30, HISTORY))
    write_torch(out / "runs" / "May29_15-34-50_host", {"train/loss": [(10, 2.0)]})
    res = sources.load([out])
    assert [r.format for r in res.runs] == ["hf-trainer-state"]


LIGHTNING = """epoch,step,train_loss_epoch,train_loss_step,val_loss
0,49,,7.5,
0,99,,nan,
0,99,,,7.0
0,99,7.2,,
1,149,,inf,
"""


def test_lightning_csv_sparse(tmp_path):
    v = tmp_path / "lightning_logs" / "version_0"
    v.mkdir(parents=True)
    (v / "metrics.csv").write_text(LIGHTNING)
    (v / "hparams.yaml").write_text("lr: 0.001\nmodel: !!python/object:foo.Bar {d: 3}\n")
    res = sources.load([tmp_path])
    (run,) = res.runs
    assert run.name == "version_0" and run.format == "lightning-csv"
    steps, vals = series_of(res, "version_0", "train/loss")
    assert steps == [49, 99, 149] and math.isnan(vals[1]) and vals[2] == math.inf
    assert series_of(res, "version_0", "val/loss") == ([99], [7.0])
    assert series_of(res, "version_0", "train_loss_epoch") == ([99], [7.2])
    assert run.meta["hparams"]["lr"] == 0.001 and run.meta["hparams"]["model"] == {"d": 3}


WIDE = """global_step,loss,grad_norm,note
1,1.0,0.5,ok
2,NaN,nan,ok
3,-inf,Infinity,ok
4,,1e-3,ok
five,1.0,1.0,bad step
6,1.0,oops,ok
7,1.0
8,0.9,0.4,ok
"""


def test_wide_csv_nonfinite_and_bad_rows(tmp_path):
    f = tmp_path / "exp1.csv"
    f.write_text(WIDE)
    res = sources.load([f])
    (run,) = res.runs
    steps, vals = series_of(res, "exp1", "train/loss")
    assert steps == [1, 2, 3, 6, 8] and math.isnan(vals[1]) and vals[2] == -math.inf
    assert series_of(res, "exp1", "train/grad_norm")[0] == [1, 2, 3, 4, 8]
    w = " | ".join(run.warnings)
    assert "2 bad rows dropped (line 6, 8)" in w
    assert "1 non-numeric cells dropped (line 7)" in w
    assert "note" in w  # a text column is ignored, and said so


def test_long_csv_with_runs_and_ranks(tmp_path):
    f = tmp_path / "all.csv"
    f.write_text(
        "run,step,metric,value,wall_time,rank\n"
        "a,1,loss,1.0,10.0,0\na,1,loss,1.5,10.0,1\nb,1,lm loss,2.0,11.0,0\n"
        "b,2,lm loss,-nan,12.0,0\n"
    )
    res = sources.load([f])
    assert [r.name for r in res.runs] == ["a", "b"]
    assert res.table.has_ranks
    rd = res.table.run_data("a")
    assert rd.by_rank["train/loss"][1].values.tolist() == [1.5]
    assert math.isnan(series_of(res, "b", "train/loss")[1][1])


def test_wandb_panel_export(tmp_path):
    f = tmp_path / "export.csv"
    f.write_text(
        '"Step","r1 - train_loss","r1 - train_loss__MIN","r1 - train_loss__MAX"\n'
        '"12","0.5","0.5","0.5"\n"14","0.4","0.4","0.4"'
    )
    res = sources.load([f])
    assert [r.name for r in res.runs] == ["r1"]
    assert series_of(res, "r1", "train/loss") == ([12, 14], [0.5, 0.4])


def test_jsonl_all_spellings(tmp_path):
    f = tmp_path / "exp7.jsonl"
    f.write_text(
        '{"step": 1, "loss": 1.0, "grad_norm": NaN, "lr": 0.1}\n'
        '{"step": 2, "loss": Infinity, "grad_norm": -Infinity, "lr": null}\n'
        '{"step": 3, "loss": "nan", "grad_norm": "inf", "elapsed": "0:01:02"}\n'
        '{"step": 4, "loss": 0.5, "optim": {"total grad norm": 2.0}}\n'
        '{"step": 5, "loss": 0.4\n'
        "\n"
        '{"loss": 0.3}\n'
    )
    res = sources.load([f])
    (run,) = res.runs
    steps, vals = series_of(res, "exp7", "train/loss")
    assert steps == [1, 2, 3, 4] and vals[1] == math.inf and math.isnan(vals[2])
    assert series_of(res, "exp7", "train/lr") == ([1], [0.1])
    assert series_of(res, "exp7", "train/grad_norm")[0] == [1, 2, 3]
    # Nested keys flatten with '/'; a second grad-norm candidate keeps its own name.
    assert series_of(res, "exp7", "optim/total grad norm") == ([4], [2.0])
    w = " | ".join(run.warnings)
    assert "1 bad lines dropped (line 5)" in w and "without a step key" in w and "elapsed" in w


def test_jsonl_rank_key(tmp_path):
    f = tmp_path / "log.jsonl"
    f.write_text('{"step": 1, "rank": 0, "loss": 1.0}\n{"step": 1, "rank": 1, "loss": 3.0}\n')
    res = sources.load([f])
    assert res.table.has_ranks
    assert res.runs[0].name == tmp_path.name  # generic stem -> named after the directory
