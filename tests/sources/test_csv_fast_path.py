"""The CSV fast path (pandas' C parser, a column at a time) gives the same runs as the
row-by-row reader, and steps aside for anything it does not handle."""

from __future__ import annotations

import numpy as np
import pytest
from sources_util import assert_same_raw_runs

from stabdiag.sources import csv as csv_reader

FAST = {
    "plain": "step,loss,lr\n0,2.5,0.001\n1,2.4,0.0009\n2,2.3,8e-4\n",
    "nan_inf": "step,loss,grad_norm\n0,nan,inf\n1,NaN,-inf\n2,Infinity,-Infinity\n3,-nan,INF\n"
    "4,+inf,nAn\n5,1.5,2.5\n",
    "empty_cells": "step,loss,val_loss\n0,2.5,\n1,,\n2,2.3,2.9\n3,2.2, \n",
    "absent_words": "step,loss\n0,null\n1,None\n2,NA\n3,n/a\n4,1.0\n",
    "non_numeric_cells": "step,loss,note\n0,2.5,ok\n1,oops,fine\n2,2.3,x\n3,1_000,y\n",
    "numeric_and_text": "step,loss\n0,1.0\n1,abc\n2,3.0\n",
    "bad_steps": "step,loss\n0,1\n1.5,2\nx,3\n,4\n1e30,5\ninf,6\n7,7\n-3,8\n",
    "big_steps": "step,loss\n9007199254740993,1\n9223372036854775807,2\n9223372036854775808,3\n",
    "rank_run_wall": "step,rank,run,wall_time,loss\n0,0,a,1.5,2.0\n0,1,a,1.6,2.1\n0,0,,1.7,2.2\n"
    "1,x,b,bad,2.3\n1,1,b,,2.4\n2,0, a ,3.0,\n",
    "long": "step,metric,value,wall_time\n0,loss,2.5,1.0\n0,lr,1e-3,1.0\n1,loss,nan,2.0\n1, ,3,2.0\n"
    "2,loss,,3.0\n2,lr,bad,3.0\n3,grad_norm,inf,x\n",
    "long_runs_ranks": "run,rank,step,tag,value\nr1,0,0,loss,1\nr2,0,0,loss,2\nr1,1,0,loss,3\n"
    ",0,1,loss,4\nr2,q,1,loss,5\n",
    "ints_and_zeros": "step,skipped,loss\n0,0,1.0\n1,1,1e-05\n2,0,0.5\n",
    "minus_zero": "step,loss\n0,-0\n1,0\n2,3\n",
    "long_digits": "step,loss\n0,0.1000000000000000055511151231257827\n1,1.7976931348623157e308\n"
    "2,4.9e-324\n3,2.2250738585072011e-308\n4,123456789012345678901234567890\n",
    "whitespace": "step , loss\n 0 , 1.5 \n1,\t2.5\n",
    "crlf": "step,loss\r\n0,1\r\n1,2\r\n",
    "bom": "\ufeffstep,loss\n0,1\n1,2\n",
    "text_only_step_col": "iteration,loss,time\n0,1,12:00\n1,2,12:01\n",
    "all_bad": "step,loss\nx,1\ny,2\n",
    "bool_col": "step,flag,loss\n0,True,1\n1,False,2\n",
    "numeric_run_names": "step,run,loss\n0,01,1\n1,1,2\n",
    "unicode_digits": "step,loss\n0,\u0661\n1,\u0663.\u0665\n",
    "no_metrics": "step\n0\n1\n",
}
SLOW = {  # well-formedness checks send these row by row
    "ragged": "step,loss\n0,1\n1,2,3\n2\n",
    "quoted": 'step,loss\n0,"1.5"\n1,"2\n',
    "blank_line": "step,loss\n0,1\n\n1,2\n",
    "lone_cr": "step,loss\r0,1\r1,2\r",
    "latin1": "step,loss,n\u00e9\n0,1,2\n".encode("latin-1"),
    "utf16": "step,loss\n0,1\n".encode("utf-16"),
    "nul": "step,loss\n0,1\x00\n",
    "dup_header": "step,loss,loss\n0,1,2\n",
    "panel": "Step,run1 - loss,run1 - loss__MIN\n0,1,1\n",
    "header_only": "step,loss\n",
}


def _write(tmp_path, name, content):
    p = tmp_path / f"{name}.csv"
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8", newline="")
    return p


@pytest.mark.parametrize("name", sorted(FAST))
def test_fast_path_matches_row_by_row(tmp_path, name):
    p = _write(tmp_path, name, FAST[name])
    fast = csv_reader._read_fast(p, csv_reader.FORMAT, None)
    slow = csv_reader.read(p, fast=False)
    if name in ("bool_col", "numeric_run_names", "minus_zero"):
        assert fast is None  # parser-inferred booleans, numeric names and -0 go row by row
    else:
        assert fast is not None
        assert_same_raw_runs(fast, slow)
    assert_same_raw_runs(csv_reader.read(p), slow)


@pytest.mark.parametrize("name", sorted(SLOW))
def test_unusual_files_go_row_by_row(tmp_path, name):
    p = _write(tmp_path, name, SLOW[name])
    assert csv_reader._read_fast(p, csv_reader.FORMAT, None) is None
    assert_same_raw_runs(csv_reader.read(p), csv_reader.read(p, fast=False))


def test_fast_path_matches_on_a_large_random_file(tmp_path):
    rng = np.random.default_rng(0)
    n = 5000
    cells = rng.standard_normal((n, 3)) * 10.0 ** rng.integers(-30, 30, (n, 3))
    spell = ["nan", "inf", "-Infinity", "", "x", "NaN", "1e400"]
    lines = ["step,rank,loss,lr,gn"]
    for i in range(n):
        row = [repr(v) for v in cells[i].tolist()]
        for j in range(3):
            if rng.random() < 0.05:
                row[j] = spell[rng.integers(len(spell))]
        lines.append(f"{i // 2},{i % 2},{','.join(row)}")
    p = _write(tmp_path, "random", "\n".join(lines) + "\n")
    fast = csv_reader._read_fast(p, csv_reader.FORMAT, None)
    assert fast is not None
    assert_same_raw_runs(fast, csv_reader.read(p, fast=False))
