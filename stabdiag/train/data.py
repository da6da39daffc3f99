"""Byte-level data with no downloads, and batches that are a pure function of (seed, step, rank).

Built-in corpus: the running interpreter's own standard-library source, read as bytes in sorted
path order (real text on every machine, identical for a given Python build). Because every batch
is drawn from a generator seeded by (seed, step, rank), a resumed run sees exactly the batches the
uninterrupted run would have seen, with no data-loader state to checkpoint.
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch

from stabdiag.errors import TrainError
from stabdiag.train.inject import InjectEvent

VAL_FRACTION = 0.1


@dataclass(frozen=True)
class Corpus:
    """Train and val byte tensors (uint8) plus a description for run.json."""

    train: torch.Tensor
    val: torch.Tensor
    name: str
    sha256: str

    @property
    def num_bytes(self) -> int:
        return len(self.train) + len(self.val)


def _stdlib_bytes(cap: int) -> bytes:
    root = Path(sysconfig.get_paths()["stdlib"])
    parts: list[bytes] = []
    size = 0
    # Sorted relative paths; skip installed packages and the (huge, repetitive) test suite.
    for path in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()):
        rel = path.relative_to(root).parts
        if rel[0] in ("site-packages", "dist-packages", "test", "idlelib") or "tests" in rel:
            continue
        try:
            chunk = path.read_bytes()
        except OSError:
            continue
        parts.append(chunk)
        size += len(chunk)
        if size >= cap:
            break
    if size < 100_000:
        raise TrainError(
            f"{root}: expected the Python standard library source, found "
            f"only {size} bytes of .py files; use data=synthetic or data=FILE"
        )
    return b"".join(parts)[:cap]


def _synthetic_bytes(cap: int, seed: int) -> bytes:
    """A learnable but non-trivial stream: random 'words' from a small vocabulary, Zipf-ish."""
    g = torch.Generator().manual_seed(seed + 12345)
    num_words = 512
    lengths = torch.randint(2, 9, (num_words,), generator=g)
    letters = torch.randint(ord("a"), ord("z") + 1, (int(lengths.sum()),), generator=g)
    words = [bytes(w.tolist()) for w in torch.split(letters, lengths.tolist())]
    weights = 1.0 / torch.arange(1, num_words + 1, dtype=torch.float64)
    picks = torch.multinomial(weights, cap // 5 + 1, replacement=True, generator=g)
    return b" ".join(words[i] for i in picks.tolist())[:cap]


def load_corpus(source: str, max_bytes: int, seed: int) -> Corpus:
    if source == "stdlib":
        raw, name = _stdlib_bytes(max_bytes), f"stdlib:{sysconfig.get_paths()['stdlib']}"
    elif source == "synthetic":
        raw, name = _synthetic_bytes(max_bytes, seed), "synthetic"
    else:
        path = Path(source)
        try:
            raw = path.read_bytes()[:max_bytes]
        except OSError as exc:
            raise TrainError(f"{path}: cannot read data file ({exc.strerror})") from None
        name = f"file:{path}"
    if len(raw) < 2_000:
        raise TrainError(f"{name}: expected at least 2000 bytes of text, found {len(raw)}")
    data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    split = int(len(data) * (1 - VAL_FRACTION))
    return Corpus(data[:split], data[split:], name, hashlib.sha256(raw).hexdigest())


def _seed_of(*parts: object) -> int:
    """A stable 63-bit seed from parts (Python's hash() of str is salted per process)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def get_batch(
    data: torch.Tensor,
    batch_size: int,
    seq_len: int,
    *,
    seed: int,
    step: int,
    rank: int = 0,
    stream: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of `seq_len + 1` bytes -> (x, y), both (B, T) int64; y is x shifted by one.

    `stream` separates train (0) from val (1) draws so evaluation never perturbs training.
    """
    if len(data) <= seq_len + 1:
        raise TrainError(
            f"corpus split of {len(data)} bytes is shorter than one sequence "
            f"({seq_len + 1}); lower block_size or use more data"
        )
    g = torch.Generator().manual_seed(_seed_of("batch", seed, step, rank, stream))
    starts = torch.randint(len(data) - seq_len - 1, (batch_size,), generator=g)  # (B,)
    idx = starts[:, None] + torch.arange(seq_len + 1)  # (B, T+1)
    window = data[idx].long()
    return window[:, :-1], window[:, 1:]


def corrupt_batch(
    x: torch.Tensor,
    y: torch.Tensor,
    event: InjectEvent,
    *,
    seed: int,
    step: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The injected bad batch: uniformly random bytes, or one byte repeated."""
    if event.params["mode"] == "repeat":
        window = torch.full((x.shape[0], x.shape[1] + 1), int(event.params["byte"]))
    else:
        g = torch.Generator().manual_seed(_seed_of("bad", seed, step))
        window = torch.randint(256, (x.shape[0], x.shape[1] + 1), generator=g)
    return window[:, :-1], window[:, 1:]
