"""DeepSpeed overflow messages and HF Trainer stdout (research/formats.md 2.2, 4.2) + real log."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from stabdiag.sources import deepspeed, hf_stdout

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "real_logs"


def _series(run, name):
    m = run.codes == run.names.index(name)
    return list(zip(run.steps[m].tolist(), run.values[m].tolist(), strict=True))


@pytest.mark.parametrize(
    "line, attempted, new",
    [
        (
            "[deepspeed] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 65536, reducing to 32768",
            65536.0,
            32768.0,
        ),
        (
            "[deepspeed] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 65536, but hysteresis is 2."
            " Reducing hysteresis to 1",
            65536.0,
            65536.0,
        ),
        (
            "[2021-05-25 06:41:46,236] [INFO] [stage3.py:2708:_overflow_clean_up] [deepscale] OVERFLOW! "
            "Rank 0 Skipping step. Attempted loss scale: 256, reducing to 128.0",
            256.0,
            128.0,
        ),
        (
            "[deepspeed] fp16 dynamic loss scale overflow! Skipping step. Attempted loss scale: 8, "
            "reducing to 4",
            8.0,
            4.0,
        ),
        ("Overflow detected. Skipping step. Attempted loss scale: 16, reducing to 8", 16.0, 8.0),
        (
            "Gradient overflow.  Skipping step, loss scaler 0 reducing loss scale to 32768.0",
            None,
            32768.0,
        ),
        ("[deepspeed] OVERFLOW! Rank 0 Skipping step.", None, None),
    ],
)
def test_parse_overflow(line, attempted, new):
    ov = deepspeed.parse_overflow(line)
    assert ov is not None and ov.attempted == attempted and ov.new == new


def test_not_an_overflow():
    assert deepspeed.parse_overflow("overflow of the buffer, reducing to 3") is None


DS_LOG = """\
[2021-05-25 06:30:55,343] [INFO] [logging.py:60:log_dist] [Rank 0] step=0, skipped=0, lr=[5e-05], mom=[[0.9, 0.999]]
[2021-05-25 06:38:10,754] [INFO] [stage3.py:2708:_overflow_clean_up] [deepscale] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 256, reducing to 256
[2021-05-25 06:41:46,236] [INFO] [stage3.py:2708:_overflow_clean_up] [deepscale] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 256, reducing to 128.0
[2021-05-25 06:50:00,000] [INFO] [logging.py:60:log_dist] [Rank 0] step=10, skipped=2, lr=[5e-05], mom=[[0.9, 0.999]]
[2021-05-25 06:51:00,000] [INFO] [stage3.py:2708:_overflow_clean_up] [deepscale] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 128.0, reducing to 64.0
{'train_runtime': 871.787, 'train_samples_per_second': 1.147, 'train_steps_per_second': 0.005, 'epoch': 1.0}
"""


def test_overflows_placed_after_nearest_step(tmp_path):
    p = tmp_path / "ds.out"
    p.write_text(DS_LOG)
    assert deepspeed.looks_like(p, DS_LOG)
    [run] = deepspeed.read(p)
    assert _series(run, "skipped_step") == [(1, 1.0), (2, 1.0), (11, 1.0)]
    assert _series(run, "loss scale") == [(0, 256.0), (1, 256.0), (2, 128.0), (11, 64.0)]
    assert _series(run, "skipped (cumulative)") == [(0, 0.0), (10, 2.0)]
    assert run.meta["summary"]["train_runtime"] == 871.787


HF_LOG = """\
Training/evaluation parameters TrainingArguments(output_dir=out, logging_steps=50, seed=42)
{'loss': 4.6758, 'grad_norm': nan, 'learning_rate': 0.0001, 'epoch': 0.05}
{'loss': 4.6758, 'grad_norm': nan, 'learning_rate': 0.0001, 'epoch': 0.05}
{'loss': '2.345', 'grad_norm': '1.234', 'learning_rate': '4.8e-05', 'epoch': '0.1'}{'loss': 0.0, 'grad_norm': nan, 'learning_rate': 9.990133642141359e-05, 'epoch': 0.15}
{'eval_loss': 2.5, 'eval_runtime': 1.0, 'epoch': 0.15}
{'loss': 'oops', 'learning_rate': 1e-05, 'epoch': 0.2}
"""


def test_hf_stdout_dicts(tmp_path):
    p = tmp_path / "train.log"
    p.write_text(HF_LOG)
    assert hf_stdout.looks_like(p, HF_LOG)
    [run] = hf_stdout.read(p)
    loss = _series(run, "loss")
    assert loss == [(50, 4.6758), (100, 2.345), (150, 0.0)]
    assert math.isnan(_series(run, "grad_norm")[0][1])
    assert _series(run, "eval_loss") == [(150, 2.5)]
    assert _series(run, "learning_rate")[-1] == (200, 1e-05)
    assert any("logging_steps=50" in w for w in run.warnings)
    assert any("duplicate" in w for w in run.warnings)


def test_hf_stdout_tqdm_counter_gives_step(tmp_path):
    text = " 10%|#         | 10/100 [00:01<00:09]\r{'loss': 1.5, 'learning_rate': 1e-4, 'epoch': 0.1}\n"
    p = tmp_path / "o.txt"
    p.write_text(text)
    [run] = hf_stdout.read(p)
    assert _series(run, "loss") == [(10, 1.5)]


def test_config_dicts_are_not_metrics(tmp_path):
    text = "[config.py:752:print] dynamic_loss_scale_args ...... {'init_scale': 256, 'scale_window': 1000}\n"
    p = tmp_path / "o.txt"
    p.write_text(text)
    assert not hf_stdout.looks_like(p, text)
    [run] = hf_stdout.read(p)
    assert len(run) == 0


@pytest.mark.skipif(not REAL.is_dir(), reason="shared/real_logs not available")
def test_real_hf_deepspeed_overflows():
    p = REAL / "hf_deepspeed_bigscience" / "hf_ds_gpt2_base_n16-1832552.out"
    head = p.read_bytes()[:65536].decode("utf-8", "replace")
    assert deepspeed.looks_like(p, head)
    [run] = deepspeed.read(p)
    assert _series(run, "skipped_step") == [(1, 1.0), (2, 1.0)]
    assert _series(run, "loss scale") == [
        (0, 256.0),
        (1, 256.0),
        (2, 128.0),
    ]  # hysteresis, then drop
