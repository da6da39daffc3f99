"""MLflow file store and W&B (CSV export, offline .wandb) readers (research/formats.md 7, 8)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from stabdiag.errors import SourceError
from stabdiag.sources import mlflow, wandb_csv, wandb_offline

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "real_logs"


def _series(run, name):
    m = run.codes == run.names.index(name)
    return list(zip(run.steps[m].tolist(), run.values[m].tolist(), strict=True))


def _mlrun(
    root: Path, exp: str, rid: str, metrics: dict[str, str], tags: dict[str, str] | None = None
) -> Path:
    (root / exp).mkdir(parents=True, exist_ok=True)
    (root / exp / "meta.yaml").write_text(f"experiment_id: '{exp}'\nname: exp{exp}\n")
    d = root / exp / rid
    (d / "metrics").mkdir(parents=True)
    (d / "meta.yaml").write_text(f"run_id: {rid}\nstatus: 3\nstart_time: 1628697775000\n")
    for k, v in metrics.items():
        (d / "metrics" / k).parent.mkdir(parents=True, exist_ok=True)
        (d / "metrics" / k).write_text(v)
    (d / "tags").mkdir()
    for k, v in (tags or {}).items():
        (d / "tags" / k).write_text(v)
    return d


def test_mlflow_store(tmp_path):
    root = tmp_path / "mlruns"
    _mlrun(
        root,
        "1",
        "abc",
        {
            "loss": "1628697792090 332.6841735839844 0\n1628697795789 297.6000061035156 1\n"
            "1628697799319 nan 2\nbroken line here now\n",
            "train/grad_norm": "1628697792091 1.5 0\n",
        },
        {"mlflow.runName": "my-run"},
    )
    _mlrun(root / "mlruns", "0", "def", {"val_loss": "1 2.0\n2 1.5\n"})  # nested, old 2-column
    assert mlflow.looks_like(root, "") and mlflow.looks_like(tmp_path, "")
    runs = {r.name: r for r in mlflow.read(root)}
    run = runs["my-run"]
    assert run.names == ("loss", "train/grad_norm")
    assert [s for s, _ in _series(run, "loss")] == [0, 1, 2]
    assert run.wall_time[0] == pytest.approx(1628697792.090)
    assert run.meta["experiment"] == "exp1" and run.meta["run_id"] == "abc"
    assert any("malformed" in w for w in run.warnings)
    assert _series(runs["def"], "val_loss") == [(0, 2.0), (1, 1.5)]


def test_mlflow_not_a_store(tmp_path):
    assert not mlflow.looks_like(tmp_path, "")
    with pytest.raises(SourceError):
        mlflow.read(tmp_path)


CSV = (
    '"Step","swept-galaxy-5 - train_loss","swept-galaxy-5 - train_loss__MIN",'
    '"swept-galaxy-5 - train_loss__MAX","other - run - val_loss"\n'
    '"12","0.03683819994330406","0.03683819994330406","0.03683819994330406",""\n'
    '"14","0.05","0.05","0.05","1.5"\n'
    '"x","1","1","1","1"\n'
    '"20","","","","NaN"'
)


def test_wandb_csv(tmp_path):
    p = tmp_path / "export.csv"
    p.write_text(CSV)
    assert wandb_csv.looks_like(p, CSV)
    runs = {r.name: r for r in wandb_csv.read(p)}
    assert set(runs) == {"swept-galaxy-5", "other - run"}
    assert _series(runs["swept-galaxy-5"], "train_loss") == [(12, 0.03683819994330406), (14, 0.05)]
    assert [s for s, _ in _series(runs["other - run"], "val_loss")] == [14, 20]
    assert runs["other - run"].meta["envelope_columns_ignored"] == 2
    assert any("line 4" in w for w in runs["other - run"].warnings)


def test_wandb_csv_rejects_plain_csv(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("step,loss\n1,2\n")
    assert not wandb_csv.looks_like(p, p.read_text())


def _varint(n: int) -> bytes:
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def _ld(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _history(step: int, **items: str) -> bytes:
    body = b"".join(
        _ld(1, _ld(1, k.encode()) + _ld(16, v.encode()))
        for k, v in {**items, "_step": str(step), "_timestamp": "1680062008.5"}.items()
    )
    return _ld(2, body)


def _wandb_file(records: list[bytes]) -> bytes:
    out = bytearray(b":W&B" + struct.pack("<HB", 0xBEE1, 0))
    for rec in records:
        for kind, chunk in (
            ((1, rec),)
            if len(rec) < 1000
            else ((2, rec[:500]), (3, rec[500:1000]), (4, rec[1000:]))
        ):
            left = 32768 - len(out) % 32768
            if left < 7:
                out += b"\0" * left
            crc = zlib.crc32(bytes([kind]) + chunk) & 0xFFFFFFFF
            out += struct.pack("<IHB", crc, len(chunk), kind) + chunk
    return bytes(out)


def test_wandb_offline_decodes_history(tmp_path):
    run_rec = _ld(17, _ld(1, b"abc123") + _ld(3, b"proj") + _ld(8, b"lion-run"))
    big = _history(2, train_loss_local="0.7", pad="1" * 1200)
    data = _wandb_file(
        [
            run_rec,
            _history(0, lr="0.003", train_loss_local="NaN"),
            _history(1, train_loss_local="Infinity"),
            big,
        ]
    )
    d = tmp_path / "run-20230329_055314-abc123"
    d.mkdir()
    (d / "run-abc123.wandb").write_bytes(data)
    assert wandb_offline.looks_like(d, "") and wandb_offline.looks_like(tmp_path, "")
    [run] = wandb_offline.read(tmp_path)
    assert run.name == "lion-run" and run.meta["project"] == "proj"
    loss = _series(run, "train_loss_local")
    assert [s for s, _ in loss] == [0, 1, 2] and loss[1][1] == float("inf")
    assert run.warnings == ()
    [cut] = wandb_offline.read(_truncate(d / "run-abc123.wandb", len(data) - 300))
    assert [s for s, _ in _series(cut, "train_loss_local")] == [0, 1]
    assert "truncated" in cut.warnings[0]


def _truncate(p: Path, n: int) -> Path:
    out = p.with_name("cut.wandb")
    out.write_bytes(p.read_bytes()[:n])
    return out


def test_wandb_offline_bad_header(tmp_path):
    p = tmp_path / "x.wandb"
    p.write_bytes(b"nope")
    with pytest.raises(SourceError):
        wandb_offline.read(p)


@pytest.mark.skipif(not REAL.is_dir(), reason="shared/real_logs not available")
def test_real_stores():
    [ml] = mlflow.read(REAL / "mlflow_keras_swahili")
    assert len(_series(ml, "loss")) == 10 and ml.meta["params"]["opt_name"] == "SGD"
    [csv_run] = wandb_csv.read(REAL / "wandb_export_csv" / "dtu-400-target-loss.csv")
    assert csv_run.name == "swept-galaxy-5" and len(csv_run) == 10_000
    [w] = wandb_offline.read(REAL / "wandb_offline_lion")
    steps = _series(w, "train_loss_local")
    assert steps[0][0] == 0 and steps[-1][0] == 4041
    assert set(w.names) >= {"lr", "train_loss_local", "grad_norm_square"}
    assert any("truncated" in x for x in w.warnings)
