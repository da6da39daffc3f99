"""Adversarial inputs, one small generator per defect class of the hardening campaigns.

Each generator writes its files under a directory and returns the path to load plus the family
(reader format) it attacks. They are built in code (no stored blobs) and sized so that the
defect they pin (a quadratic loop, an unbounded expansion, a crash) is unmistakable, while the
fixed reader handles them in well under a second. Used by the regression tests and by the
long fuzz campaign (fuzz_campaign.py).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

from hardening_util import _ld, _varint, record, scalar_event

# --------------------------------------------------------------------------- TensorBoard

_FILE_VERSION = b"\x09" + struct.pack("<d", 1.7e9) + _ld(3, b"brain.Event:2")


def tb_file(d: Path, payloads: list[bytes], name: str = "events.out.tfevents.1.host") -> Path:
    f = d / "run" / name
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(record(_FILE_VERSION) + b"".join(record(p) for p in payloads))
    return f


def tensor_event(step: int, tag: bytes, tensor: bytes, *, metadata: bool = True) -> bytes:
    """An Event with one Value{tag, tensor} (and the scalars-plugin metadata), as torch's
    ``add_scalar(new_style=True)`` writes it."""
    meta = _ld(9, _ld(1, _ld(1, b"scalars"))) if metadata else b""
    val = _ld(1, tag) + _ld(8, tensor) + meta
    return b"\x09" + struct.pack("<d", 1.7e9) + b"\x10" + _varint(step) + _ld(5, _ld(1, val))


def tb_ff_record(d: Path, n: int = 1 << 20) -> Path:
    """D1: one record of n bytes of 0xFF (valid CRCs): a never-ending varint."""
    return tb_file(d, [scalar_event(0, "train/loss", 1.0), b"\xff" * n])


def tb_long_tag(d: Path, n: int = 40_000, tag_len: int = 400_000) -> Path:
    """D2: many short-tag records and one enormous tag."""
    pay = [scalar_event(i, "train/loss", 1.0) for i in range(n)]
    pay.append(scalar_event(n, "x" * tag_len, 1.0))
    return tb_file(d, pay)


def tb_double_new_style(d: Path, n: int = 50) -> Path:
    """C1: ``add_scalar(..., new_style=True, double_precision=True)``: a DT_DOUBLE tensor with
    the value in double_val (packed 0x32), interleaved with two ordinary float scalars (one
    slow-path tag next to two fast-path tags is what broke the reader)."""
    pay = []
    for i in range(n):
        tensor = b"\x08\x02" + b"\x12\x00" + _ld(6, struct.pack("<d", 2.0 - i / n))
        pay.append(tensor_event(i, b"train/loss", tensor))
        pay.append(scalar_event(i, "train/lr", 1e-3))
        pay.append(scalar_event(i, "train/grad_norm", 1.0))
    return tb_file(d, pay)


def tb_non_utf8_tags(d: Path) -> Path:
    """C2: two distinct tag byte strings that decode to the same text with 'replace'."""
    pay = []
    for i in range(20):
        pay.append(scalar_event(i, "train/loss", 2.0 - i / 20))
        for bad in (b"loss\xff", b"loss\xfe"):
            t = b"\x08\x01" + _ld(5, struct.pack("<f", 1.0))  # slow path: packed float_val
            pay.append(tensor_event(i, bad, t))
            val = _ld(1, bad) + b"\x15" + struct.pack("<f", float(i))
            pay.append(
                b"\x09" + struct.pack("<d", 1.7e9) + b"\x10" + _varint(i) + _ld(5, _ld(1, val))
            )
    return tb_file(d, pay)


def tb_half_odd_lengths(d: Path) -> Path:
    """C3: bfloat16/half tensors whose content length is not 2 (and odd varints in half_val)."""
    pay = [scalar_event(0, "train/loss", 1.0)]
    for i, content in enumerate([b"", b"\x01", b"\x01\x02\x03", b"\x00" * 9]):
        for dtype in (14, 19):
            pay.append(tensor_event(i + 1, b"h", b"\x08" + bytes([dtype]) + _ld(4, content)))
    for dtype in (14, 19):  # half_val far above 16 bits
        pay.append(tensor_event(9, b"h", b"\x08" + bytes([dtype]) + b"\x68" + _varint(1 << 40)))
    return tb_file(d, pay)


def tb_huge_length(d: Path, n_after: int = 2000) -> Path:
    """R2: a length header of 2^63 (valid length CRC) followed by valid records."""
    from stabdiag.sources.tensorboard import masked_crc

    f = tb_file(d, [scalar_event(i, "train/loss", 1.0) for i in range(10)])
    header = struct.pack("<Q", 1 << 63)
    bad = header + struct.pack("<I", masked_crc(header))
    tail = b"".join(record(scalar_event(10 + i, "train/loss", 1.0)) for i in range(n_after))
    f.write_bytes(f.read_bytes() + bad + tail)
    return f


# --------------------------------------------------------------------------- W&B


def _wandb_frame(payloads: list[bytes]) -> bytes:
    """LevelDB-log framing in 32 KiB blocks (FULL, or FIRST/MIDDLE/LAST across blocks)."""
    out = bytearray(b":W&B\xbe\xe1\x01")
    block = 32 * 1024
    for p in payloads:
        first = True
        while True:
            left = block - len(out) % block
            if left < 7:
                out += b"\x00" * left
                continue
            room = left - 7
            piece, p = p[:room], p[room:]
            kind = (1 if not p else 2) if first else (4 if not p else 3)
            out += (
                struct.pack(
                    "<IHB", zlib.crc32(bytes([kind]) + piece) & 0xFFFFFFFF, len(piece), kind
                )
                + piece
            )
            first = False
            if not p:
                break
    return bytes(out)


def wandb_history(step: int, items: dict[str, float]) -> bytes:
    body = b"".join(
        _ld(
            1,
            _ld(1, k.encode()) + b"\x82\x01" + _varint(len(json.dumps(v))) + json.dumps(v).encode(),
        )
        for k, v in items.items()
    )
    body += _ld(1, _ld(1, b"_step") + b"\x82\x01" + _varint(len(str(step))) + str(step).encode())
    return _ld(2, body)


def wandb_file(d: Path, payloads: list[bytes]) -> Path:
    f = d / "offline-run-20240101_000000-abc" / "run-abc.wandb"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(_wandb_frame(payloads))
    return f


def wandb_ff_record(d: Path, n: int = 1 << 20) -> Path:
    """D3: a 1 MB record of 0xFF."""
    return wandb_file(d, [wandb_history(0, {"loss": 1.0}), b"\xff" * n])


def wandb_split_record(d: Path, n: int = 24 << 20) -> Path:
    """D3: one huge record split over many blocks (FIRST, MIDDLE..., LAST)."""
    return wandb_file(
        d,
        [
            wandb_history(0, {"loss": 1.0}),
            _ld(15, b"\x00" * n),
            b"\x00" * n,
            wandb_history(1, {"loss": 0.5}),
        ],
    )


def wandb_damaged_field(d: Path) -> Path:
    """C4: one history record with a damaged nested field (valid CRC) among good ones."""
    pay = [wandb_history(i, {"loss": 2.0 - i / 50}) for i in range(50)]
    pay[10] = _ld(2, _ld(1, b"\x0a\xff\xff\xff"))  # truncated nested field
    pay[20] = _ld(17, b"\x0a\x7f")  # damaged run record
    return wandb_file(d, pay)


# --------------------------------------------------------------------------- MLflow

BILLION_LAUGHS = (
    "\n".join(
        ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
        + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
        + ["run_name: *a8", "run_id: r1", "experiment_id: '0'"]
    )
    + "\n"
)


def mlflow_run(d: Path, meta: str, metrics: dict[str, str]) -> Path:
    run = d / "mlruns" / "0" / "r1"
    (run / "metrics").mkdir(parents=True, exist_ok=True)
    (run / "meta.yaml").write_text(meta)
    for k, text in metrics.items():
        (run / "metrics" / k).write_text(text)
    return run


def _ml_loss(n: int = 30) -> str:
    return "".join(f"{1700000000000 + i} {2.0 - i / n} {i}\n" for i in range(n))


def mlflow_bomb(d: Path) -> Path:
    """S5: billion-laughs aliases in meta.yaml."""
    return mlflow_run(d, BILLION_LAUGHS, {"loss": _ml_loss()})


def mlflow_bad_steps(d: Path) -> Path:
    """C5: steps inf, nan and 1.5 among valid lines."""
    text = _ml_loss() + "1700000009999 1.0 inf\n1700000009999 1.0 nan\n1700000009999 1.0 1.5\n"
    return mlflow_run(d, "run_id: r1\nrun_name: ok\n", {"loss": text})


# --------------------------------------------------------------------------- text logs

_REGEX_LINES = {
    "torchtitan": ("train.log", "step: 1  loss: 1.0 " + "a" * 80_000),
    "deepspeed": ("train.log", "[deepspeed] " + "OVERFLOW!" * 40_000),
    "megatron": ("slurm.out", "*** JOB 1 ON " * 40_000),
}


def text_file(d: Path, name: str, lines: list[str]) -> Path:
    f = d / name
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text("\n".join(lines) + "\n")
    return f


def _good_lines(fmt: str, n: int = 30) -> list[str]:
    if fmt == "torchtitan":
        return [
            f"[rank0]:[titan] 2024-01-01 00:00:00,000 - root - INFO - step: {i}  loss: "
            f"{2 - i / n:.4f}  memory: 1.00GiB(1.00%)  tps: 100  mfu: 1.00%"
            for i in range(1, n)
        ]
    if fmt == "deepspeed":
        return [
            f"[2024-01-01 00:00:00,000] [INFO] [logging.py:96:log_dist] [Rank 0] step={i}, "
            f"skipped=0, lr=[0.001], mom=[(0.9, 0.95)]"
            for i in range(1, n)
        ] + [
            f"{{'loss': {2 - i / n:.4f}, 'learning_rate': 0.001, 'epoch': {i / n:.2f}}}"
            for i in range(1, n)
        ]
    if fmt == "fairseq":
        return [
            f'2024-01-01 00:00:00 | INFO | train_inner | {{"epoch": 1, "update": {i / n:.3f}, '
            f'"loss": "{2 - i / n:.3f}", "num_updates": "{i}", "gnorm": "1.0"}}'
            for i in range(1, n)
        ]
    if fmt == "nanogpt":
        return [f"iter {i}: loss {2 - i / n:.4f}, time 10.00ms, mfu 1.00%" for i in range(1, n)]
    if fmt == "llmc":
        return [f"s:{i} trl:{2 - i / n:.4f} lr:0.0006 norm:1.00" for i in range(1, n)]
    if fmt == "megatron":
        return [
            f" iteration {i:8d}/ 1000 | consumed samples: {i * 8} | elapsed time per "
            f"iteration (ms): 100.0 | learning rate: 1.000E-04 | global batch size: 8 | "
            f"lm loss: {2 - i / n:.6E} | grad norm: 1.000 | number of skipped iterations: 0 |"
            for i in range(1, n)
        ]
    raise KeyError(fmt)


def regex_line(fmt: str) -> Callable[[Path], Path]:
    """D4: one adversarial line for a reader's patterns among valid lines."""

    def gen(d: Path) -> Path:
        name, line = _REGEX_LINES[fmt]
        good = _good_lines(fmt)
        return text_file(d, name, good[:10] + [line] + good[10:])

    gen.__name__ = f"regex_{fmt}"
    return gen


_BAD_TOKENS = {
    "fairseq": lambda good: (
        good[:5] + [good[5].replace('"num_updates": "6"', '"num_updates": "nan"')] + good[6:]
    ),
    "nanogpt": lambda good: good[:5] + ["iter " + "9" * 5000 + ": loss 1.0, time 1ms"] + good[5:],
    "llmc": lambda good: good[:5] + ["s:" + "9" * 5000 + " trl:1.0"] + good[5:],
    "torchtitan": lambda good: (
        good[:5] + [good[5].replace("step: 6 ", "step: " + "9" * 5000 + " ")] + good[5:]
    ),
    "megatron": lambda good: (
        good[:5]
        + [good[5].replace("iteration        6/", "iteration " + "9" * 5000 + "/")]
        + good[5:]
    ),
    "deepspeed": lambda good: good[:5] + ["[Rank 0] step=" + "9" * 5000 + ", skipped=1"] + good[5:],
}


def bad_token(fmt: str) -> Callable[[Path], Path]:
    """C6: one line with a bad number among valid lines of a text log."""

    def gen(d: Path) -> Path:
        name = {"megatron": "slurm.out"}.get(fmt, "train.log")
        return text_file(d, name, _BAD_TOKENS[fmt](_good_lines(fmt)))

    gen.__name__ = f"bad_token_{fmt}"
    return gen


# --------------------------------------------------------------------------- CSV


def csv_quoted_newline(d: Path) -> Path:
    """L7: a valid CSV (Python's csv.writer) with a newline inside a quoted cell."""
    import csv

    d.mkdir(parents=True, exist_ok=True)
    f = d / "run.csv"
    with open(f, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "loss", "note"])
        for i in range(40):
            w.writerow([i, 2.0 - i / 40, "multi\nline" if i == 3 else "x"])
    return f


def csv_countdown(d: Path, n: int = 50_000) -> Path:
    """D6: a CSV whose step counts down: every row is a step back."""
    d.mkdir(parents=True, exist_ok=True)
    f = d / "countdown.csv"
    f.write_text("step,loss\n" + "".join(f"{n - i},{1.0 + (i % 7) / 10}\n" for i in range(n)))
    return f


# --------------------------------------------------------------------------- registry

ATTACKS: dict[str, tuple[str, Callable[[Path], Path]]] = {
    "D1-tb-ff-record": ("tensorboard", tb_ff_record),
    "D2-tb-long-tag": ("tensorboard", tb_long_tag),
    "C1-tb-double-new-style": ("tensorboard", tb_double_new_style),
    "C2-tb-non-utf8-tags": ("tensorboard", tb_non_utf8_tags),
    "C3-tb-half-lengths": ("tensorboard", tb_half_odd_lengths),
    "R2-tb-huge-length": ("tensorboard", tb_huge_length),
    "D3-wandb-ff-record": ("wandb-offline", wandb_ff_record),
    "D3-wandb-split-record": ("wandb-offline", wandb_split_record),
    "C4-wandb-damaged-field": ("wandb-offline", wandb_damaged_field),
    "S5-mlflow-yaml-bomb": ("mlflow", mlflow_bomb),
    "C5-mlflow-bad-steps": ("mlflow", mlflow_bad_steps),
    "L7-csv-quoted-newline": ("csv", csv_quoted_newline),
    "D6-csv-countdown": ("csv", csv_countdown),
    **{f"D4-regex-{f}": (f, regex_line(f)) for f in _REGEX_LINES},
    **{f"C6-bad-token-{f}": (f, bad_token(f)) for f in _BAD_TOKENS},
}
