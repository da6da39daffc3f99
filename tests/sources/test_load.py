"""load(): directory walks, checkpoints never opened, bad files, run names, --format, equality."""

from __future__ import annotations

import csv
import json
import pickle

import numpy as np
import pytest
from sources_util import write_torch

from stabdiag import sources
from stabdiag.errors import ConfigError, SourceError


class _Trap:
    """Unpickling this creates a marker file: proof that something opened the checkpoint."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoints_are_never_opened(tmp_path):
    marker = tmp_path / "UNPICKLED"
    payload = pickle.dumps(_Trap(str(marker)))
    run = tmp_path / "out"
    write_torch(run, {"train/loss": [(1, 1.0), (2, 0.9)]})
    for name in (
        "pytorch_model.bin",
        "model.pt",
        "ckpt.pth",
        "last.ckpt",
        "optimizer.pt",
        "state.pkl",
        "model.safetensors",
        "rng_state.pth",
    ):
        (run / name).write_bytes(payload)
    res = sources.load([tmp_path])
    assert not marker.exists()
    assert [r.name for r in res.runs] == ["out"] and res.errors == ()
    with pytest.raises(SourceError, match="never opened"):
        sources.load([run / "pytorch_model.bin"])
    assert not marker.exists()


def test_one_bad_file_among_good_ones(tmp_path):
    write_torch(tmp_path / "good", {"train/loss": [(1, 1.0)]})
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "events.out.tfevents.1.host").write_bytes(b"garbage" * 10)
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")  # no step column
    (tmp_path / "README.md").write_text("# not a log")
    res = sources.load([tmp_path])
    assert [r.name for r in res.runs] == ["good"]
    assert len(res.errors) == 2
    assert any("bad/events.out.tfevents.1.host: expected" in e for e in res.errors)
    assert any("notes.csv: expected a CSV with a step column" in e for e in res.errors)
    with pytest.raises(SourceError):
        sources.load([tmp_path / "notes.csv"])  # given explicitly: raise


def test_missing_path_and_unknown_format(tmp_path):
    with pytest.raises(SourceError, match="nothing at that path"):
        sources.load([tmp_path / "nope"])
    with pytest.raises(ConfigError):
        sources.load([tmp_path], fmt="parquet")


def test_run_names_unique_and_sensible(tmp_path):
    for exp in ("expA", "expB"):
        write_torch(tmp_path / exp / "runs" / "May29_15-34-50_host", {"train/loss": [(1, 1.0)]})
        v = tmp_path / exp / "lightning_logs" / "version_0"
        v.mkdir(parents=True)
        (v / "metrics.csv").write_text("step,train_loss\n1,1.0\n")
    write_torch(tmp_path / "solo" / "runs" / "Jun01_10-00-00_host", {"loss": [(1, 1.0)]})
    names = sorted(r.name for r in sources.load([tmp_path]).runs)
    assert names == [
        "Jun01_10-00-00_host",
        "expA/May29_15-34-50_host",
        "expA/version_0",
        "expB/May29_15-34-50_host",
        "expB/version_0",
    ]


def test_hf_nested_hparams_dir_is_merged(tmp_path):
    from sources_util import tensor_event, write_events

    run = tmp_path / "runs" / "May29_15-34-50_host"
    write_torch(run, {"train/loss": [(1, 1.0)]})
    write_events(run / "1685352489.123", [tensor_event(0, "_hparams_/x", 0.0, plugin="hparams")])
    res = sources.load([tmp_path])
    assert [r.name for r in res.runs] == ["May29_15-34-50_host"]


def test_keras_train_validation_merged(tmp_path):
    write_torch(tmp_path / "logs" / "fit" / "train", {"epoch_loss": [(0, 1.0), (1, 0.8)]})
    write_torch(tmp_path / "logs" / "fit" / "validation", {"epoch_loss": [(0, 1.1), (1, 0.9)]})
    res = sources.load([tmp_path])
    assert [r.name for r in res.runs] == ["fit"]
    assert res.table.series("fit", "train/loss").values.tolist() == [1.0, pytest.approx(0.8)]
    assert res.table.series("fit", "val/loss").values.tolist() == [
        pytest.approx(1.1),
        pytest.approx(0.9),
    ]


def test_format_override(tmp_path):
    f = tmp_path / "log.txt"
    f.write_text('{"step": 1, "loss": 2.0}\n')
    with pytest.raises(SourceError):
        sources.load([f])
    res = sources.load([f], fmt="jsonl")
    assert res.table.series(res.runs[0].name, "train/loss").values.tolist() == [2.0]
    g = tmp_path / "data.tsvish"
    g.write_text("step,lm loss\n1,3.0\n")
    assert sources.load([g], fmt="csv").runs[0].format == "csv"


def test_map_override(tmp_path):
    f = tmp_path / "m.csv"
    f.write_text("step,my_tag,loss\n1,5.0,1.0\n")
    res = sources.load([f], overrides={"train/loss": "my_tag"})
    assert res.table.series("m", "train/loss").values.tolist() == [5.0]
    assert ("my_tag", "train/loss", "--map train/loss=my_tag") in res.runs[0].mapping


def test_symlink_loop_and_hidden_dirs(tmp_path):
    write_torch(tmp_path / "a", {"train/loss": [(1, 1.0)]})
    (tmp_path / "a" / "loop").symlink_to(tmp_path, target_is_directory=True)
    write_torch(tmp_path / ".hidden", {"train/loss": [(1, 1.0)]})
    res = sources.load([tmp_path])
    assert [r.name for r in res.runs] == ["a"]


def test_same_run_as_tb_csv_jsonl_gives_equal_tables(tmp_path):
    rng = np.random.default_rng(0)
    steps = list(range(0, 200, 5))
    data = {
        "train/loss": rng.lognormal(size=len(steps)).astype(np.float32),
        "train/grad_norm": rng.lognormal(size=len(steps)).astype(np.float32),
    }
    data["train/loss"][7] = np.nan
    data["train/grad_norm"][9] = np.inf
    write_torch(
        tmp_path / "tb" / "run",
        {k: list(zip(steps, v.tolist(), strict=True)) for k, v in data.items()},
    )
    (tmp_path / "csv").mkdir()
    with open(tmp_path / "csv" / "run.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "loss", "grad_norm"])
        for i, s in enumerate(steps):
            w.writerow(
                [s, repr(float(data["train/loss"][i])), repr(float(data["train/grad_norm"][i]))]
            )
    (tmp_path / "jsonl").mkdir()
    with open(tmp_path / "jsonl" / "run.jsonl", "w") as fh:
        for i, s in enumerate(steps):
            fh.write(
                json.dumps(
                    {
                        "step": s,
                        "train/loss": float(data["train/loss"][i]),
                        "grad_norm": float(data["train/grad_norm"][i]),
                    }
                )
                + "\n"
            )
    cols = ["step", "metric", "value"]
    frames = []
    for sub in ("tb", "csv", "jsonl"):
        res = sources.load([tmp_path / sub])
        assert [r.name for r in res.runs] == ["run"]
        f = res.table.frame[cols].sort_values(["metric", "step"]).reset_index(drop=True)
        frames.append(f)
    for f in frames[1:]:
        assert f["step"].tolist() == frames[0]["step"].tolist()
        assert f["metric"].tolist() == frames[0]["metric"].tolist()
        np.testing.assert_array_equal(f["value"].to_numpy(), frames[0]["value"].to_numpy())


def test_stabdiag_train_dir_is_one_run(tmp_path):
    """A run dir with the tidy metrics.csv and a TensorBoard mirror of it is one run."""
    run = tmp_path / "run1"
    write_torch(run, {"train/loss": [(1, 1.0)]})
    (run / "metrics.csv").write_text("step,metric,value,wall_time\n1,train/loss,1.0,5.0\n")
    (run / "run.json").write_text(json.dumps({"precision": "fp16"}, indent=2))
    res = sources.load([tmp_path])
    (info,) = res.runs
    assert info.name == "run1" and info.format == "csv" and info.meta["precision"] == "fp16"


def test_forced_format_reads_only_that_family_in_a_directory(tmp_path):
    write_torch(tmp_path / "tb", {"train/loss": [(1, 1.0)]})
    (tmp_path / "m.csv").write_text("step,loss\n1,2.0\n")
    res = sources.load([tmp_path], fmt="csv")
    assert [(r.name, r.format) for r in res.runs] == [("m", "csv")] and res.errors == ()


def test_config_json_is_not_a_log_and_files_are_read_once(tmp_path):
    (tmp_path / "config.json").write_text('{"hidden_size": 768}\n')
    (tmp_path / "log.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    res = sources.load([tmp_path, tmp_path / "log.jsonl"])
    assert len(res.runs) == 1 and res.errors == ()
    assert len(res.table) == 1
