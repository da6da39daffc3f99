"""load() finds and routes every format of issue 4 (stdout logs, MLflow, W&B) by content."""

from __future__ import annotations

from pathlib import Path

import pytest

from stabdiag.sources import FORMATS, load, registry, sniff
from stabdiag.table import LOSS_SCALE, SKIPPED_STEP, TRAIN_LOSS

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "real_logs"

MEGATRON = (
    " iteration       10/  292968 | consumed samples:          640 | elapsed time per iteration (ms):"
    " 1234.5 | learning rate: 1.000E-05 | global batch size:    64 | lm loss: 1.105786E+01 |"
    " loss scale: 4096.0 | grad norm: 12.345 | number of skipped iterations:   0 |"
    " number of nan iterations:   0 |\n"
)


@pytest.fixture
def real() -> Path:
    if not REAL.is_dir():
        pytest.skip("../shared/real_logs is not present")
    return REAL


def test_every_format_has_an_example() -> None:
    assert set(FORMATS) == {r.name for r in registry.READERS if r.example}


def test_megatron_stdout_is_sniffed_by_content(tmp_path: Path) -> None:
    p = tmp_path / "slurm-123.out"
    p.write_text(
        "some launcher noise\n" + MEGATRON.replace("10/", "20/").replace("640", "1280") + MEGATRON
    )
    assert sniff.sniff(p) == "megatron"
    res = load([tmp_path])
    assert [r.format for r in res.runs] == ["megatron"]
    rd = res.table.run_data(res.runs[0].name)
    assert rd.get(TRAIN_LOSS) is not None and rd.get(LOSS_SCALE) is not None


def test_markdown_quoting_a_log_is_not_a_log(tmp_path: Path) -> None:
    (tmp_path / "PROVENANCE.md").write_text("Example:\n\n" + MEGATRON)
    assert sniff.sniff(tmp_path / "PROVENANCE.md") is None


@pytest.mark.parametrize(
    ("folder", "formats"),
    [
        ("megatron_bigscience_gpt2", {"megatron"}),
        ("hf_deepspeed_bigscience", {"deepspeed"}),
        ("bigscience_chronicles", {"megatron"}),
        ("llmc_modded_nanogpt", {"llmc"}),
        ("mlflow_keras_swahili", {"mlflow"}),
        ("wandb_export_csv", {"wandb-csv"}),
        ("wandb_offline_lion", {"wandb-offline"}),
    ],
)
def test_real_folders_route_to_their_reader(real: Path, folder: str, formats: set[str]) -> None:
    res = load([real / folder])
    assert not res.errors, res.errors
    assert {r.format for r in res.runs} == formats


def test_deepspeed_overflows_become_skips_and_scale_drops(real: Path) -> None:
    res = load([real / "hf_deepspeed_bigscience"])
    rd = res.table.run_data(res.runs[0].name)
    skipped = rd.get(SKIPPED_STEP)
    assert skipped is not None and skipped.values.sum() >= 2
    assert rd.get(LOSS_SCALE).values.min() == 128.0
