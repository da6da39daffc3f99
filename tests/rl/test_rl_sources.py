"""verl console and file-logger logs, read through the normal reader layer."""

from __future__ import annotations

import math

from rl_util import verl_console, verl_jsonl

from stabdiag import sources
from stabdiag.sources import sniff, verl

ROWS = [
    {
        "actor/entropy": 1.2 - 0.01 * i,
        "actor/pg_loss": 0.01 * (-1) ** i,
        "actor/grad_norm": 0.4,
        "critic/score/mean": 0.1 * i,
        "response_length/mean": 300.0 + i,
    }
    for i in range(12)
]


def series(load, name):
    f = load.table.frame
    return f[f.metric == name].sort_values("step")["value"].to_list()


def test_console_lines_with_ray_prefix_and_numpy2_values(tmp_path):
    p = verl_console(tmp_path / "train.log", ROWS)
    assert sniff.sniff(p) == verl.FORMAT
    got = sources.load([p])
    assert got.runs[0].format == verl.FORMAT and not got.errors
    assert series(got, "rl/entropy")[:2] == [1.2, 1.19]
    assert series(got, "rl/loss")[:2] == [0.01, -0.01]  # the policy objective, not train/loss
    assert "train/loss" not in set(got.table.frame.metric)
    assert series(got, "train/grad_norm")[0] == 0.4


def test_console_plain_values_nan_and_garbage(tmp_path):
    p = tmp_path / "verl_run.log"
    p.write_text(
        "loading model...\n"
        "step:1 - actor/entropy:1.000 - critic/score/mean:nan - actor/pg_loss:-0.010 - note:hello\n"
        "step:2 - actor/entropy:0.900 - critic/score/mean:0.200 - actor/pg_loss:0.000\n"
        "Traceback (most recent call last):\n"
    )
    got = sources.load([p])
    run = got.runs[0]
    assert run.format == verl.FORMAT
    assert math.isnan(series(got, "rl/score")[0])
    assert any("non-numeric" in w for w in run.warnings)
    assert any("did not end cleanly" in w for w in run.warnings)


def test_file_logger_jsonl_nests_keys_under_data(tmp_path):
    p = verl_jsonl(tmp_path / "exp.jsonl", ROWS)
    with p.open("a") as fh:
        fh.write('{"step": 13, "data": {"actor/entr')  # a line cut while the job was killed
    got = sources.load([p])
    assert series(got, "rl/entropy")[-1] == ROWS[-1]["actor/entropy"]
    mapping = {raw: canon for raw, canon, _ in got.runs[0].mapping}
    assert (
        mapping["data/actor/entropy"] == "rl/entropy"
        and mapping["data/critic/score/mean"] == "rl/score"
    )
    assert got.runs[0].warnings  # the cut line is reported, the good part kept
