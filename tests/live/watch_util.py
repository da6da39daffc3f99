"""Logs of one synthetic run in four formats, and a writer that appends them in ragged chunks.

The writer cuts anywhere (mid-line, mid-record), as a training process flushing its buffers
does, so the watcher always sees half-written last lines and records."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np

STEPS, SPIKE = 300, 200


def values(spike: bool = True, seed: int = 0):
    rng = np.random.default_rng(seed)
    s = np.arange(STEPS)
    loss = 3 * np.exp(-s / 80) + 1 + 0.02 * rng.standard_normal(STEPS)
    gn = 1 + 0.1 * rng.standard_normal(STEPS)
    if spike:
        loss[SPIKE:] *= 4  # jumps and stays up: an error once it has not recovered
        gn[SPIKE] = 40
    return s, loss, gn


def csv_text(spike=True) -> bytes:
    s, loss, gn = values(spike)
    rows = ["step,loss,grad_norm,lr"] + [
        f"{a},{b:.6f},{c:.6f},0.0003" for a, b, c in zip(s, loss, gn, strict=True)
    ]
    return ("\n".join(rows) + "\n").encode()


def jsonl_text(spike=True) -> bytes:
    s, loss, gn = values(spike)
    return "".join(
        json.dumps({"step": int(a), "loss": float(b), "grad_norm": float(c), "lr": 3e-4}) + "\n"
        for a, b, c in zip(s, loss, gn, strict=True)
    ).encode()


def llmc_text(spike=True) -> bytes:
    s, loss, gn = values(spike)
    return "".join(
        f"s:{a} trl:{b:.6f} lr:0.000300 norm:{c:.4f}\n" for a, b, c in zip(s, loss, gn, strict=True)
    ).encode()


def tb_bytes(tmp: Path, spike=True) -> tuple[bytes, str]:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    s, loss, gn = values(spike)
    d = tmp / "tb-source"
    w = EventFileWriter(str(d))
    for a, b, c in zip(s, loss, gn, strict=True):
        vals = [
            summary_pb2.Summary.Value(tag=t, simple_value=float(v))
            for t, v in (("train/loss", b), ("train/grad_norm", c), ("train/lr", 3e-4))
        ]
        w.add_event(
            event_pb2.Event(
                wall_time=1000.0 + a, step=int(a), summary=summary_pb2.Summary(value=vals)
            )
        )
    w.close()
    (f,) = d.glob("events.out.tfevents*")
    return f.read_bytes(), f.name


def spike_offset(data: bytes, fmt: str) -> int:
    """Byte offset just past the spike step's record/line (when its data is complete)."""
    if fmt == "tensorboard":
        import struct

        off, k = 0, -1  # first record is the file_version event
        while off < len(data):
            (n,) = struct.unpack_from("<Q", data, off)
            off += n + 16
            if k == SPIKE:
                return off
            k += 1
        raise AssertionError("spike record not found")
    lines = data.split(b"\n")
    skip = 1 if fmt == "csv" else 0
    return len(b"\n".join(lines[: SPIKE + skip + 1])) + 1


class Writer(threading.Thread):
    """Appends ``data`` to ``path`` in ragged chunks; records when ``mark`` bytes were written."""

    def __init__(
        self, path: Path, data: bytes, mark: int | None = None, pause: float = 0.01, seed: int = 0
    ) -> None:
        super().__init__(daemon=True)
        self.path, self.data, self.mark, self.pause = path, data, mark, pause
        self.rng = np.random.default_rng(seed)
        self.marked_at: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        pos = 0
        with open(self.path, "ab", buffering=0) as fh:
            while pos < len(self.data) and not self.stop.is_set():
                n = int(self.rng.integers(20, 300))
                fh.write(self.data[pos : pos + n])
                pos += n
                if self.mark is not None and self.marked_at is None and pos >= self.mark:
                    self.marked_at = time.monotonic()
                time.sleep(self.pause)
