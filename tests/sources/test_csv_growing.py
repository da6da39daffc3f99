"""A CSV still being written: its half-written last line is left out and said once as such, not
counted as a bad row and never read as a value ('3,1.' is not 1.0)."""

from __future__ import annotations

from stabdiag.sources import load


def _loss(r):
    t = r.table.frame
    return t[t["metric"] == "train/loss"]["value"].tolist()


def test_half_written_last_line_is_left_out_and_said(tmp_path):
    f = tmp_path / "run.csv"
    f.write_text("step,loss\n1,2.0\n2,1.9\n3,1.")
    r = load([f])
    assert _loss(r) == [2.0, 1.9]
    (w,) = r.runs[0].warnings
    assert "no line end" in w and "line 4" in w and "bad row" not in w


def test_a_finished_file_keeps_every_row(tmp_path):
    f = tmp_path / "run.csv"
    f.write_text("step,loss\n1,2.0\n2,1.9\n3,1.8\n")
    r = load([f])
    assert _loss(r) == [2.0, 1.9, 1.8] and not r.runs[0].warnings
