"""The stdout-log readers stream their files (issue 13 R1): memory follows the values kept.

Each generated log is ~30 MB, mostly long lines no reader keeps (an environment dump), with a
metric line every so often. A reader that went back to reading the file whole holds at least
the decoded text (30 MB, plus the bytes it came from) and fails ``peak < size / 2``; a streaming
reader holds one line and the kept values. A line over 16 MB (no line end: binary junk, a sparse
file) is refused with one line naming the file, before any regex sees it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sources_util import peak_memory

from stabdiag.errors import SourceError
from stabdiag.sources import (
    deepspeed,
    fairseq,
    hf_stdout,
    launcher,
    llmc,
    megatron,
    nanogpt,
    textlog,
    torchtitan,
    verl,
)
from stabdiag.sources.raw import MAX_LINE, RawRun

# ~4 KB a line, matching no reader's pattern (no '|', no 'step', no failure words).
NOISE = "INFO env dump " + "PYTHONPATH=/opt/conda/lib/python3.11/site-packages " * 80
TARGET = 30 << 20
EVERY = 10  # one metric line per this many lines


def _megatron(i: int) -> str:
    return (
        f" iteration {i:8d}/  100000 | consumed samples: {i * 32} | elapsed time per iteration"
        f" (ms): 1000.0 | learning rate: 1.000E-04 | global batch size: 32 | lm loss:"
        f" {2 + i % 7 / 10:.6E} | loss scale: 65536.0 | grad norm: 1.000 | number of skipped"
        " iterations:   0 | number of nan iterations:   0 |"
    )


def _deepspeed(i: int) -> str:
    return (
        "[2024-01-01 00:00:00,000] [INFO] [logging.py:96:log_dist] [Rank 0] "
        f"step={i}, skipped=0, lr=[0.0001], mom=[(0.9, 0.999)]"
    )


def _hf(i: int) -> str:
    return f"{{'loss': {2 + i % 7 / 10}, 'learning_rate': 1e-05, 'epoch': {i / 1000}}}"


def _fairseq(i: int) -> str:
    return (
        f"2024-01-01 00:00:00 | INFO | train_inner | epoch 001:  {i:5d} / 9999 loss=5.1,"
        f" ppl=34.3, wps=1000, ups=1, wpb=1000, bsz=8, num_updates={i}, lr=0.0001, gnorm=1.2"
    )


def _nanogpt(i: int) -> str:
    return f"iter {i}: loss {2 + i % 7 / 10:.4f}, time 100.00ms, mfu 10.00%"


def _llmc(i: int) -> str:
    return f"s:{i} trl:{2 + i % 7 / 10:.4f}"


def _torchtitan(i: int) -> str:
    return (
        f"[titan] 2024-01-01 00:00:00,000 - root - INFO - step: {i:4d}  loss: "
        f"{2 + i % 7 / 10:.4f}  memory: 9.46GiB(64.99%)  tps: 1,234  mfu: 40.00%"
    )


def _verl(i: int) -> str:
    return f"(TaskRunner pid=1) step:{i} - actor/entropy:0.5 - critic/score/mean:{i % 7 / 10}"


def _tee(i: int) -> str:
    return f"[rank{i % 2}]:{_nanogpt(i // 2)}"


def _read_tee(path: Path) -> list[RawRun]:
    return launcher.read_tee(path, nanogpt.FORMAT, nanogpt.read)


# (name, metric line of step i, reader, series each metric line gives at least)
CASES: list[tuple[str, Callable[[int], str], Callable[[Path], list[RawRun]], int]] = [
    ("megatron", _megatron, megatron.read, 3),
    ("deepspeed", _deepspeed, deepspeed.read, 2),
    ("hf-stdout", _hf, hf_stdout.read, 2),
    ("fairseq", _fairseq, fairseq.read, 3),
    ("nanogpt", _nanogpt, nanogpt.read, 3),
    ("llmc", _llmc, llmc.read, 1),
    ("torchtitan", _torchtitan, torchtitan.read, 3),
    ("verl", _verl, verl.read, 2),
    ("launcher-tee", _tee, _read_tee, 3),
]


def _write(path: Path, metric: Callable[[int], str], noise: str = NOISE) -> int:
    """A log of about TARGET bytes; returns the number of metric lines in it."""
    lines = []
    size = 0
    n = 0
    i = 0
    while size < TARGET:
        if i % EVERY == 0:
            line = metric(n + 1)
            n += 1
        else:
            line = noise
        lines.append(line)
        size += len(line) + 1
        i += 1
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return n


@pytest.mark.parametrize(("name", "metric", "read", "per_line"), CASES, ids=[c[0] for c in CASES])
def test_text_log_memory_follows_the_kept_values(tmp_path, name, metric, read, per_line):
    path = tmp_path / "train.log"
    n = _write(path, metric)
    size = path.stat().st_size
    [run], peak = peak_memory(lambda: read(path))
    assert len(run) >= n * per_line // (2 if name == "launcher-tee" else 1), (name, len(run))
    assert peak < size / 2, f"{name}: peak {peak} for a {size}-byte log: the file is read whole"


def test_failure_warning_is_found_in_the_same_pass(tmp_path):
    path = tmp_path / "train.log"
    path.write_text(
        "\n".join([_nanogpt(1), "\x1b[31mTraceback (most recent call last):\x1b[0m", _nanogpt(2)])
        + "\r\n",
        encoding="utf-8",
    )
    [run] = nanogpt.read(path)
    assert len(run) == 6
    assert any(
        'did not end cleanly at line 2, "Traceback (most recent call last):"' in w
        for w in run.warnings
    ), run.warnings


def test_lines_decode_like_the_whole_file(tmp_path):
    """Per-line decoding keeps errors='replace', CRLF, tqdm's \\r and launcher prefixes."""
    path = tmp_path / "train.log"
    body = (
        b"iter 1: loss 2.0, time 1.00ms\r\n"
        b"\xff\xfe junk \xe2\x82\n"
        b"12: iter 2: loss 3.0, time 1.00ms\r"
        b"iter 3: loss 4.0, time 1.00ms\n"
        b"\x1b[32miter 4: loss 5.0, time 1.00ms\x1b[0m"
    )
    path.write_bytes(body)
    streamed = list(textlog.TextLog(path))
    whole = list(textlog.lines(body.decode("utf-8", errors="replace")))
    assert streamed == whole
    assert [ln.number for ln in streamed] == [1, 2, 3, 3, 4]
    assert streamed[2].rank == 12 and streamed[4].text.startswith("iter 4")


@pytest.mark.parametrize("size", [1, 7, 64, 1 << 20])
def test_blocks_join_to_the_whole_text(tmp_path, size):
    """Whole-log regex passes (DeepSpeed's pre-scan) see exactly the text, in whole lines."""
    path = tmp_path / "train.log"
    body = b"a\xe2\x82\nb\r\n\xffc\n\nlast line without end"
    path.write_bytes(body)
    pieces = list(textlog.blocks(path, size=size))
    assert "".join(pieces) == body.decode("utf-8", errors="replace")
    assert all(p.endswith("\n") for p in pieces[:-1])


@pytest.mark.parametrize(("name", "metric", "read", "per_line"), CASES, ids=[c[0] for c in CASES])
def test_an_over_long_line_is_refused_with_one_line(tmp_path, name, metric, read, per_line):
    path = tmp_path / "train.log"
    with path.open("wb") as fh:
        fh.write((metric(1) + "\n").encode())
        fh.write(b"\0" * (MAX_LINE + 10))  # a sparse hole: no line end for 16 MB
        fh.write(b"\n" + (metric(2) + "\n").encode())
    with pytest.raises(SourceError) as err:
        read(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg, msg
    assert "line 2 is over 16 MB long" in msg, msg
