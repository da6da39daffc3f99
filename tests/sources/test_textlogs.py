"""llm.c / modded-nanogpt, nanoGPT, torchtitan and fairseq stdout (research/formats.md 5, 6)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from stabdiag.sources import fairseq, llmc, nanogpt, textlog, torchtitan

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "real_logs"


def _series(run, name):
    m = run.codes == run.names.index(name)
    return list(zip(run.steps[m].tolist(), run.values[m].tolist(), strict=True))


def _write(tmp_path, text, name="log.txt"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_textlog_prefixes_and_ansi():
    assert textlog.clean("[default7]: iteration 1/ 2 |") == (7, " iteration 1/ 2 |")
    assert textlog.clean("[rank3]:[titan] x") == (3, "[titan] x")
    assert textlog.clean("12: hello") == (12, "hello")
    assert textlog.clean("\x1b[31mstep: 1\x1b[39m") == (None, "step: 1")


def test_llmc_mainlog(tmp_path):
    text = "s:0 tel:11.0092\ns:0 trl:11.0091 lr:0.000001 norm:15.37\ns:1 trl:10.9598 lr:0.000002 norm:15.24\ns:2 trl:\n"
    p = _write(tmp_path, text, "main.log")
    assert llmc.looks_like(p, text)
    [run] = llmc.read(p)
    assert _series(run, "tel") == [(0, 11.0092)]
    assert _series(run, "norm") == [(0, 15.37), (1, 15.24)]
    assert run.name == tmp_path.name  # generic main.log -> folder name
    assert any("malformed" in w for w in run.warnings)


def test_modded_nanogpt_nan_timing_is_not_a_metric(tmp_path):
    text = (
        "import torch\nprint('step:1/2 train_loss:1')\n"
        "step:0/6000 val_loss:11.0149 train_time:305ms step_avg:nanms\n"
        "step:1/6000 train_loss:11.0091 train_time:24179ms step_avg:nanms\n"
    )
    [run] = llmc.read(_write(tmp_path, text))
    assert _series(run, "val_loss") == [(0, 11.0149)]
    assert _series(run, "train_loss") == [(1, 11.0091)]
    assert _series(run, "train_time") == [(0, 305.0), (1, 24179.0)]
    assert "step_avg" not in run.names


def test_llmc_stdout_zscores_ignored(tmp_path):
    text = "step    1/19560 | loss 11.009140 (+nanz)| norm 15.3700 (+nanz)| lr 1.00e-06 | 1234.56 ms | 45.6% bf16 MFU | 123456 tok/s\n"
    [run] = llmc.read(_write(tmp_path, text))
    assert _series(run, "loss") == [(1, 11.00914)]
    assert _series(run, "norm") == [(1, 15.37)]
    assert _series(run, "lr") == [(1, 1e-06)]
    assert _series(run, "tok/s") == [(1, 123456.0)]


def test_nanogpt(tmp_path):
    text = (
        "step 0: train loss 4.2874, val loss 4.2823\n"
        "iter 0: loss 4.2654, time 13500.54ms, mfu -100.00%\n"
        "iter 10: loss 3.1462, time 13.86ms, mfu 26.88%\nsaving checkpoint to out\n"
        "iter 20: loss nan, time 13.86ms, mfu 26.88%\niter x: loss 1\n"
    )
    p = _write(tmp_path, text)
    assert nanogpt.looks_like(p, text)
    [run] = nanogpt.read(p)
    assert _series(run, "val loss") == [(0, 4.2823)]
    assert [s for s, _ in _series(run, "loss")] == [0, 10, 20]
    assert math.isnan(_series(run, "loss")[-1][1])
    assert _series(run, "mfu (%)") == [(10, 26.88), (20, 26.88)]  # -100 sentinel dropped


TITAN = """\
[rank0]:[titan] 2026-05-18 16:04:46,338 - root - INFO - step: 14  loss:  3.24405  grad_norm:  0.8319  memory:  9.46GiB(64.99%)  tps: 7,282  tflops: 0.52  mfu: 0.17%
[rank1]:[titan] 2026-05-18 16:04:46,338 - root - INFO - step: 14  loss:  3.24405  grad_norm:  0.8319  memory:  9.46GiB(64.99%)  tps: 7,282  tflops: 0.52  mfu: 0.17%
[titan] 2026-02-24 19:46:17,508 - root - INFO - \x1b[31mstep: 15  \x1b[32mloss:  7.62585  \x1b[33mgrad_norm: 26.6250  memory: 66.91GiB(37.51%)  tps: 10,050  tflops: 314.71  mfu: 13.99%\x1b[39m
[titan] 2026-02-24 19:46:20,000 - root - INFO - validate step: 20  loss: 3.1  memory: 1.0GiB(2%)
"""


def test_torchtitan(tmp_path):
    p = _write(tmp_path, TITAN)
    assert torchtitan.looks_like(p, TITAN)
    [run] = torchtitan.read(p)
    assert _series(run, "loss") == [(14, 3.24405), (15, 7.62585)]
    assert _series(run, "tps") == [(14, 7282.0), (15, 10050.0)]
    assert _series(run, "validate loss") == [(20, 3.1)]
    assert run.rank is None and any("repeated" in w for w in run.warnings)


def test_torchtitan_ranks_that_differ_keep_rank(tmp_path):
    text = (
        "[rank0]:[titan] x - root - INFO - step: 1  loss:  3.0  grad_norm: 1.0\n"
        "[rank1]:[titan] x - root - INFO - step: 1  loss:  9.0  grad_norm: 5.0\n"
    )
    [run] = torchtitan.read(_write(tmp_path, text))
    assert run.rank is not None and sorted(set(run.rank.tolist())) == [0, 1]


FAIRSEQ = """\
2020-08-01 12:39:16 | INFO | fairseq.trainer | NOTE: overflow detected, setting loss scale to: 1024.0
2020-08-01 12:39:39 | INFO | train_inner | epoch 001:   3615 / 6547 loss=0.439, nll_loss=0.001, accuracy=87.9, wps=82565, ups=2.66, wpb=31075.5, bsz=64, num_updates=3600, lr=9e-06, gnorm=3.952, loss_scale=1399, train_wall=38, wall=1353
2023-12-15 19:38:03 | INFO | fairseq.trainer | NOTE: gradient overflow detected, ignoring gradient, setting loss scale to: 0.25
| epoch 027 | loss 6.343 | nll_loss 4.984 | ppl 31.65 | wps 164346 | ups 0.4 | wpb 364096 | bsz 11907 | num_updates 10198 | lr 0.000626286 | gnorm 0.390 | clip 0% | oom 0 | loss_scale 0.500 | wall 23080 | train_wall 21383
| epoch 027 | valid on 'valid' subset | valid_loss 8.30118 | valid_nll_loss 7.15366 | valid_ppl 142.39 | num_updates 10198 | best 4.46376
2020-02-07 13:21:07 | INFO | train | {"epoch": 1, "train_loss": "11.049", "train_nll_loss": "10.399", "num_updates": "10300"}
2020-02-07 13:21:08 | INFO | train_inner | {"epoch": 1, "update": 0.9, "loss": "nan", "gnorm": "inf", "num_updates": "10400"}
AMP: overflow detected, setting scale to to 8.0
2020-02-07 13:21:09 | INFO | train_inner | {"epoch": 1, "loss": "1.0",
| epoch 001:    200 / 1374 loss=14.351, ppl=20899.56, wps=49604, ups=0, gnorm=3.901, clip=0.000, oom=0.000, loss_scale=0.062, wall=1061, train_wall=945
FloatingPointError: Minimum loss scale reached (0.0001). Your loss is probably exploding.
"""


def test_fairseq(tmp_path):
    p = _write(tmp_path, FAIRSEQ, "train.log")
    assert fairseq.looks_like(p, FAIRSEQ)
    [run] = fairseq.read(p)
    assert _series(run, "loss")[0] == (3600, 0.439)
    assert math.isnan(_series(run, "loss")[1][1]) and _series(run, "loss")[1][0] == 10400
    assert _series(run, "gnorm")[0] == (3600, 3.952)
    assert _series(run, "loss_scale") == [(1, 1024.0), (3600, 1399.0), (3601, 0.25), (10401, 8.0)]
    assert _series(run, "loss_scale_epoch") == [(10198, 0.5)]
    assert _series(run, "skipped_step") == [(1, 1.0), (3601, 1.0), (10401, 1.0)]
    assert _series(run, "loss_epoch") == [(10198, 6.343), (10300, 11.049)]
    assert _series(run, "valid_loss") == [(10198, 8.30118)]
    assert any("without num_updates" in w for w in run.warnings)  # old line + bad JSON
    assert any("did not end cleanly" in w for w in run.warnings)


def test_text_readers_reject_each_other(tmp_path):
    p = _write(tmp_path, TITAN)
    assert not nanogpt.looks_like(p, TITAN) and not llmc.looks_like(p, TITAN)
    assert not fairseq.looks_like(p, TITAN)


@pytest.mark.skipif(not REAL.is_dir(), reason="shared/real_logs not available")
def test_real_llmc_grad_spikes():
    p = REAL / "llmc_modded_nanogpt" / "main.log"
    assert llmc.looks_like(p, p.read_text()[:65536])
    [run] = llmc.read(p)
    norm = dict(_series(run, "norm"))
    med = float(np.median([v for s, v in norm.items() if s > 1000]))
    for step in (4233, 7435, 9025, 9954):
        assert norm[step] > 3 * med
    assert len(_series(run, "tel")) == 80
    [adamw] = llmc.read(REAL / "llmc_modded_nanogpt" / "f66d43d7-e449-4029-8adf-e8537bab49ea.log")
    assert len(_series(adamw, "tel")) == 76
