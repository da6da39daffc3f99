"""Text and CSV: NaN/Inf spellings, encodings, line endings, junk cells, huge lines and files."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hardening_util import read_strict

from stabdiag.errors import SourceError
from stabdiag.sources import load


def _series(result, metric="loss"):
    f = result.table.frame
    sel = f[f.metric.isin([metric, "train/loss"])]
    return sel.step.tolist(), sel.value.tolist()


@pytest.mark.parametrize(
    "spelling,expected",
    [
        ("nan", math.nan),
        ("NaN", math.nan),
        ("-nan", math.nan),
        ("inf", math.inf),
        ("-inf", -math.inf),
        ("Infinity", math.inf),
        ("-Infinity", -math.inf),
        ("INF", math.inf),
        ("1e999", math.inf),
    ],
)
def test_nan_inf_spellings_csv(tmp_path, spelling, expected):
    f = tmp_path / "r.csv"
    f.write_text(f"step,loss\n1,2.0\n2,{spelling}\n3,1.5\n")
    steps, vals = _series(load([f]))
    assert steps == [1, 2, 3]
    assert math.isnan(vals[1]) if math.isnan(expected) else vals[1] == expected


def test_nan_inf_jsonl(tmp_path):
    f = tmp_path / "r.jsonl"
    f.write_text(
        '{"step": 1, "loss": NaN}\n{"step": 2, "loss": Infinity}\n'
        '{"step": 3, "loss": "-inf"}\n{"step": 4, "loss": 1' + "0" * 400 + "}\n"
    )
    steps, vals = _series(load([f]))
    assert steps == [1, 2, 3, 4]
    assert (
        math.isnan(vals[0]) and vals[1] == math.inf and vals[2] == -math.inf and vals[3] == math.inf
    )


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16", "utf-8-sig", "utf-16-be-bom"])
def test_encodings(tmp_path, encoding):
    text = "step,loss,note\r\n1,2.0,caf\u00e9\r\n2,1.5,na\u00efve\r\n3,1.0,x\r\n"
    f = tmp_path / "r.csv"
    data = (
        ("\ufeff" + text).encode("utf-16-be")
        if encoding == "utf-16-be-bom"
        else text.encode(encoding)
    )
    f.write_bytes(data)
    steps, vals = _series(load([f]))
    assert steps == [1, 2, 3] and vals == [2.0, 1.5, 1.0]


def test_windows_line_endings_and_bare_cr(tmp_path):
    f = tmp_path / "r.csv"
    f.write_bytes(b"step,loss\r\n1,2.0\r\n2,1.5\r3,1.0\r\n")
    steps, _ = _series(load([f]))
    assert steps[:1] == [1] and 3 in steps


def test_non_numeric_cells_are_counted(tmp_path):
    f = tmp_path / "r.csv"
    f.write_text(
        "step,loss,lr\n1,2.0,1e-3\n2,oops,1e-3\nthree,1.0,1e-3\n4,1.0,1e-3,extra\n5,0.9,1e-3\n"
    )
    r = load([f])
    steps, _ = _series(r)
    assert steps == [1, 5]
    warns = " ".join(r.runs[0].warnings)
    assert "non-numeric cells dropped (line 3)" in warns
    assert "2 bad rows dropped (line 4, 5)" in warns


def test_unterminated_quote_does_not_swallow_later_rows(tmp_path):
    """peers.md (e) garbage_csv: a stray quote must not silently eat the rest of the file."""
    rows = [f"{i},{2.0 - i / 1000}" for i in range(1, 1501)]
    rows[1099] = '1100,"1.5'
    f = tmp_path / "r.csv"
    f.write_text("step,loss\n" + "\n".join(rows) + "\n")
    r = load([f])
    steps, _ = _series(r)
    assert len(steps) == 1499 and 1500 in steps and 1100 not in steps
    assert "line 1101" in " ".join(r.runs[0].warnings)


def test_steps_out_of_order_and_repeated(tmp_path):
    f = tmp_path / "r.csv"
    f.write_text("step,loss\n1,2\n2,1.9\n3,1.8\n2,1.95\n3,1.85\n3,1.84\n4,1.7\n")
    r = load([f])
    assert len(r.table.frame) >= 7
    assert any("restart" in w for w in r.runs[0].warnings)


def test_huge_single_line_is_bounded(tmp_path):
    """A 50 MB line (a dumped tensor) between good rows: bounded time, good rows kept."""
    big = "9" * (50 << 20)
    for name, content in [
        ("r.csv", f"step,loss\n1,2.0\n2,{big}\n3,1.0\n"),
        (
            "r.jsonl",
            f'{{"step": 1, "loss": 2.0}}\n{{"step": 2, "loss": {big}}}\n{{"step": 3, "loss": 1.0}}\n',
        ),
        ("main.log", f"s:1 trl:2.0\ns:2 trl:{big}\ns:3 trl:1.0\n"),
    ]:
        f = tmp_path / name.replace(".", "_") / name
        f.parent.mkdir()
        f.write_text(content)
        t0 = time.perf_counter()
        got = read_strict(f)
        took = time.perf_counter() - t0
        print(f"50 MB line, {name}: {took:.2f}s")
        if not isinstance(got, SourceError):
            steps, _ = _series(got, "trl" if name == "main.log" else "loss")
            assert 1 in steps and 3 in steps, name


def test_a_million_line_csv(tmp_path):
    n = 1_000_000
    steps = np.arange(n)
    loss = 2.0 + np.sin(steps / 1000.0)
    f = tmp_path / "big.csv"
    with open(f, "w") as fh:
        fh.write("step,loss,lr\n")
        fh.write(
            "\n".join(
                f"{s},{v:.5f},0.001" for s, v in zip(steps.tolist(), loss.tolist(), strict=True)
            )
        )
        fh.write("\n")
    t0 = time.perf_counter()
    r = load([f])
    print(f"million-line CSV: {time.perf_counter() - t0:.2f}s")
    assert len(r.table.frame) == 2 * n
    assert not r.errors


def test_gigantic_step_numbers(tmp_path):
    f = tmp_path / "main.log"
    f.write_text("s:1 trl:2.0\ns:99999999999999999999999 trl:1.0\ns:3 trl:1.0\n")
    r = load([f])
    steps, _ = _series(r, "trl")
    assert steps == [1, 3]
    assert "beyond the int64 range" in " ".join(r.runs[0].warnings)


def test_megatron_huge_skip_count_is_bounded(tmp_path):
    f = tmp_path / "train.out"
    f.write_text(
        "iteration 1/ 10 | consumed samples: 1 | lm loss: 2.0 | "
        "number of skipped iterations: 0 |\n"
        "iteration 999999999999/ 10 | consumed samples: 2 | lm loss: 1.9 | "
        "number of skipped iterations: 99999999999 |\n"
    )
    got = read_strict(f)
    assert not isinstance(got, SourceError)


def test_over_long_integer_in_one_file_is_an_error_not_a_crash(tmp_path):
    """A >4300-digit step (Python's int-parsing limit) is contained by load(): that record is
    skipped (issue 13 C6: one bad token costs its line, not the file), the file is reported as
    holding no values, and the others in the directory still load."""
    bad = tmp_path / "d" / "a" / "train.out"
    bad.parent.mkdir(parents=True)
    bad.write_text("iteration 9" + "9" * 5000 + "/ 5 | consumed samples: 1 | lm loss: 1 |\n")
    good = tmp_path / "d" / "b.csv"
    good.write_text("step,loss\n1,2\n2,1\n")
    r = load([tmp_path / "d"])
    assert "b" in [i.name for i in r.runs]
    said = list(r.errors) + [w for i in r.runs for w in i.warnings]
    assert any("train.out" in s for s in said), said
