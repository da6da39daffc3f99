"""Megatron-LM / Megatron-DeepSpeed stdout: verbatim snippets (research/formats.md 4.1) + real logs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from stabdiag.sources import megatron

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "real_logs"

FP16_START = """\
 iteration       10/    1000 | consumed samples:           40 | elapsed time per iteration (ms): 5837.9 | learning rate: 0.000E+00 | global batch size:     4 | loss scale: 8388608.0 | number of skipped iterations:  10 | number of nan iterations:   0 |
time (ms) | forward-compute: 1.0 | backward-compute: 2.0
 iteration       20/    1000 | consumed samples:           80 | elapsed time per iteration (ms): 2711.1 | learning rate: 3.750E-05 | global batch size:     4 | lm loss: 1.249319E+01 | loss scale: 32768.0 | number of skipped iterations:   8 | number of nan iterations:   0 |
 iteration       30/    1000 | consumed samples:          120 | elapsed time per iteration (ms): 2767.3 | learning rate: 1.500E-04 | global batch size:     4 | lm loss: 3.282511E+01 | loss scale: 16384.0 | grad norm: 9.804 | number of skipped iterations:   1 | number of nan iterations:   0 |
Main process received SIGTERM, exiting
"""

DS_ENGINE = """\
 iteration        3/    1000 | consumed samples:         3072 | elapsed time per iteration (ms): 137138.4 | learning rate: 5.625E-05 | global batch size:  1024 | lm-loss: 4.103157E+01 | loss scale: -1.0 | grad norm: 0.000 | num zeros: 0.0 | number of skipped iterations:   0 | number of nan iterations:   0 |
"""

NAN_AND_VALID = """\
 iteration     9026/  159576 | consumed samples:       540464 | elapsed time per iteration (ms): 62075.5 | learning rate: 6.000E-05 | global batch size:   192 | lm loss: 7.024580E+00 | loss scale: 16384.0 | grad norm: 20609.780 | num zeros: 0.0 | number of skipped iterations:   0 | number of nan iterations:   0 |
time (ms)
 iteration     9027/  159576 | consumed samples:       540656 | elapsed time per iteration (ms): 63274.6 | learning rate: 6.000E-05 | global batch size:   192 | loss scale: 8192.0 | grad norm: 20609.780 | num zeros: 0.0 | number of skipped iterations:   0 | number of nan iterations:   0 |
------------------------------------------------------------------------------------------------
 validation loss at iteration 9027 | lm loss value: 7.174200E+00 | lm loss PPL: 1.305315E+03 |
------------------------------------------------------------------------------------------------
"""

WRAPPED = """\
[default7]: iteration   42780/ 115311 | consumed samples:    71455664 | consumed tokens: 146341199872 | elapsed time per iteration (s): 105.16 | learning
 rate: 4.475E-05 | global batch size: 2048 | lm loss: 2.117073E+00 | grad norm: 0.150 | num zeros: 0.0 | number of skipped iterations:  0 | number of nan
iterations:  0 | samples per second: 19.474 | TFLOPs: 149.10 |
[...]
[default7]: iteration   42781/ 115311 | consumed samples:    71457712 | consumed tokens: 146345394176 | elapsed time per iteration (s): 105.17 | learning rate: 4.475E-05 | global batch size: 2048 | lm loss: 2.116946E+00 | grad norm: 0.140 | num zeros: 0.0 | number of skipped iteratio
ns:  0 | number of nan iterations:  0 | samples per second: 19.473 | TFLOPs: 149.09 |
"""

OVERFLOWS = """\
 iteration    17061/  159576 | consumed samples:      8128736 | learning rate: 5.948E-05 | global batch size:  2048 | lm loss: 2.667121E+00 | loss scale: 1048576.0 | grad norm: 0.2 | number of skipped iterations:   0 | number of nan iterations:   0 |
[2022-01-19 13:09:13,305] [INFO] [stage_1_and_2.py:1644:step] [deepscale] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 1048576.0, reducing to 1048576.0
 iteration    17062/  159576 | consumed samples:      8130784 | learning rate: 5.948E-05 | global batch size:  2048 | lm loss: 4.374269E+00 | loss scale: 1048576.0 | grad norm: 0.2 | number of skipped iterations:   0 | number of nan iterations:   0 |
[2022-01-19 13:16:17,683] [INFO] [stage_1_and_2.py:1644:step] [deepscale] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 1048576.0, reducing to 524288.0
 iteration    17063/  159576 | consumed samples:      8132832 | learning rate: 5.948E-05 | global batch size:  2048 | lm loss: 4.365822E+00 | loss scale: 524288.0 | grad norm: 0.2 | number of skipped iterations:   0 | number of nan iterations:   0 |
"""


def _write(tmp_path: Path, text: str, name: str = "run.out") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _series(run, name):
    m = run.codes == run.names.index(name)
    return list(zip(run.steps[m].tolist(), run.values[m].tolist(), strict=True))


def test_fp16_startup_skips_scale_and_sigterm(tmp_path):
    p = _write(tmp_path, FP16_START)
    assert megatron.looks_like(p, FP16_START)
    [run] = megatron.read(p)
    assert _series(run, "loss scale") == [(10, 8388608.0), (20, 32768.0), (30, 16384.0)]
    assert _series(run, "lm loss") == [(20, 12.49319), (30, 32.82511)]  # no NaN at 10: all skipped
    skipped = _series(run, "skipped_step")
    assert [s for s, v in skipped if v == 1.0] == list(range(1, 11)) + list(range(13, 21)) + [30]
    assert _series(run, "number of skipped iterations") == [(10, 10.0), (20, 8.0), (30, 1.0)]
    assert any("did not end cleanly" in w for w in run.warnings)


def test_deepspeed_variant_drops_minus_one_scale(tmp_path):
    [run] = megatron.read(_write(tmp_path, DS_ENGINE))
    assert "loss scale" not in run.names
    assert _series(run, "lm-loss") == [(3, 41.03157)]
    assert "DeepSpeed" in run.meta["loss_scale"]


def test_missing_loss_without_skips_is_nan_and_validation(tmp_path):
    [run] = megatron.read(_write(tmp_path, NAN_AND_VALID))
    loss = _series(run, "lm loss")
    assert loss[0] == (9026, 7.02458) and loss[1][0] == 9027 and math.isnan(loss[1][1])
    assert _series(run, "lm loss validation") == [(9027, 7.1742)]
    assert any("NaN loss" in w for w in run.warnings)


def test_hard_wraps_prefixes_and_elisions(tmp_path):
    [run] = megatron.read(_write(tmp_path, WRAPPED))
    assert _series(run, "lm loss") == [(42780, 2.117073), (42781, 2.116946)]
    assert _series(run, "number of nan iterations") == [(42780, 0.0), (42781, 0.0)]
    assert _series(run, "number of skipped iterations") == [(42780, 0.0), (42781, 0.0)]
    assert _series(run, "TFLOPs") == [(42780, 149.10), (42781, 149.09)]
    assert run.meta["launcher_rank"] == 7


def test_overflow_messages_mark_the_step_in_progress(tmp_path):
    [run] = megatron.read(_write(tmp_path, OVERFLOWS))
    skipped = dict(_series(run, "skipped_step"))
    assert skipped == {17061: 0.0, 17062: 1.0, 17063: 1.0}
    assert _series(run, "loss scale")[-1] == (17063, 524288.0)


def test_duplicated_and_fused_records(tmp_path):
    line = DS_ENGINE.strip()
    text = f"[default0]:{line}\n[default1]:{line}\n{line}{line.replace('iteration        3/', 'iteration        4/')}\n"
    [run] = megatron.read(_write(tmp_path, text))
    assert [s for s, _ in _series(run, "lm-loss")] == [3, 4]
    assert any("duplicate" in w for w in run.warnings)


def test_malformed_lines_are_ignored(tmp_path):
    text = (
        " iteration   abc/ 10 | lm loss: x |\n iteration 5/ 10 | lm loss: oops | grad norm: nan |\n"
    )
    [run] = megatron.read(_write(tmp_path, text))
    assert "lm loss" not in run.names
    assert math.isnan(dict(_series(run, "grad norm"))[5])


def test_not_megatron(tmp_path):
    p = _write(tmp_path, "hello\nstep 0: train loss 4.2\n", "x.txt")
    assert not megatron.looks_like(p, p.read_text())


@pytest.mark.skipif(not REAL.is_dir(), reason="shared/real_logs not available")
def test_real_megatron_scale_drops_and_skips():
    [run] = megatron.read(REAL / "megatron_bigscience_gpt2" / "meg_gpt2_perf_n16-1999618.out")
    assert _series(run, "loss scale") == [
        (1, 4294967296.0),
        (2, 2147483648.0),
        (3, 1073741824.0),
        (4, 536870912.0),
    ]
    assert _series(run, "skipped_step") == [(1, 1.0), (2, 1.0), (3, 1.0), (4, 1.0)]
    assert "lm loss" not in run.names
    assert any("did not end cleanly" in w for w in run.warnings)
    [base] = megatron.read(
        REAL / "megatron_bigscience_gpt2" / "meg_gpt2_base_n16_dp1_tp4_pp16-1809577.out"
    )
    assert dict(_series(base, "loss scale"))[20] == 32768.0
    assert dict(_series(base, "lm loss"))[30] == pytest.approx(32.82511)


@pytest.mark.skipif(not REAL.is_dir(), reason="shared/real_logs not available")
def test_real_chronicles_keep_write_order_and_nan():
    [run] = megatron.read(
        REAL / "bigscience_chronicles" / "tr8-104B-wide" / "chronicles_log_excerpts.txt"
    )
    steps = [s for s, _ in _series(run, "lm loss")]
    assert steps[:8] == [7000, 7010, 7220, 6900, 6910, 6920, 6930, 6940]  # rollback kept in order
    gn = dict(_series(run, "grad norm"))
    assert gn[8741] == pytest.approx(3273877.676)
    assert math.isnan(dict(_series(run, "lm loss"))[9027])
    [b] = megatron.read(
        REAL / "bigscience_chronicles" / "tr8b-104B" / "chronicles_log_excerpts.txt"
    )
    assert [s for s, v in _series(b, "skipped_step") if v == 1.0][:3] == [17062, 17063, 17064]
