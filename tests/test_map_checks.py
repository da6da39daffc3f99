"""--map mistakes are loud (issue 15 item 3): a canonical side that is not a canonical name, or a
series that no run has, is one clear line and exit 2, never a silently ignored map."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import stabdiag
from stabdiag.cli import app

SAMPLE = Path(__file__).resolve().parents[1] / "sample_runs" / "loss_spike.csv"


@pytest.mark.parametrize(
    ("arg", "said"),
    [
        ("train_loss=loss", "is not a canonical metric"),
        ("train/loss=no_such_series", "no run has a series named 'no_such_series'"),
    ],
)
def test_map_mistakes_exit_2_with_one_line(arg: str, said: str) -> None:
    res = CliRunner().invoke(app, ["analyze", str(SAMPLE), "--map", arg])
    assert res.exit_code == 2
    assert said in res.output and "Traceback" not in res.output


def test_a_good_map_still_works_and_the_library_raises_the_same() -> None:
    res = CliRunner().invoke(
        app, ["analyze", str(SAMPLE), "--map", "train/loss=loss", "--fail-on", "never"]
    )
    assert res.exit_code == 0, res.output
    with pytest.raises(stabdiag.StabdiagError, match="not a canonical metric"):
        stabdiag.analyze(SAMPLE, map={"loss": "loss"})
