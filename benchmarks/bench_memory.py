"""Benchmark: peak memory and time of reading large logs (issue 13, R1 and R3).

Usage:
    python benchmarks/bench_memory.py                       # every case at its default size
    python benchmarks/bench_memory.py --case csv --csv-mb 2048
    python benchmarks/bench_memory.py --case tb --tb-events 10000000
    python benchmarks/bench_memory.py --code /tmp/old       # the same cases against another checkout

Each case generates its input once under --dir (reused by later runs with the same size), then
reads it in a fresh child process (``stabdiag.sources.load``, i.e. reader + the long table, or
``--stage analyze``: the whole ``stabdiag analyze`` command) and reports the child's peak RSS
(``resource.getrusage``: ru_maxrss), the wall time, and the rows it loaded. ``--code DIR`` puts DIR
first on the child's ``sys.path``, so an old commit checked out with ``git worktree add`` is
measured with the same inputs. Cases:

- csv: a wide CSV (step + 8 metric columns), --csv-mb megabytes.
- jsonl: the same rows as JSON Lines, --csv-mb megabytes.
- wandb-csv: a W&B panel export (``Step``, ``run - metric``, ``__MIN``/``__MAX``), --csv-mb.
- wandb-offline: a ``.wandb`` history file with --csv-mb megabytes of history records.
- sparse: a --sparse-gb sparse file named ``.csv`` (no line end anywhere): the reader must give
  up at once with one line, not read gigabytes first.
- tb / tb-cached: --tb-events scalar events in one event file; cold (no cache), then twice
  through the cache (the first read writes the entry, the second is a hit).
- megatron / deepspeed: captured stdout of --text-mb megabytes, about 1 KB a step: the metric
  line(s) among the timer, memory and launcher lines a real log interleaves (read, not kept).
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

METRICS = (
    "train/loss",
    "train/grad_norm",
    "train/lr",
    "train/loss_scale",
    "val/loss",
    "train/param_norm",
    "train/tokens_per_s",
    "train/update_ratio",
)
CASES = (
    "csv",
    "jsonl",
    "wandb-csv",
    "wandb-offline",
    "sparse",
    "tb",
    "tb-cached",
    "megatron",
    "deepspeed",
)


# --------------------------------------------------------------------------- generators


def _rows(mb: float, chunk: int = 20000):
    """Blocks of (steps, values[steps x metrics]) until about ``mb`` megabytes of CSV were made."""
    rng = np.random.default_rng(0)
    step, done = 0, 0
    target = int(mb * 2**20)
    while done < target:
        steps = np.arange(step, step + chunk)
        vals = rng.lognormal(0.0, 0.3, size=(chunk, len(METRICS)))
        step += chunk
        done += yield steps, vals


def _write_text(path: Path, mb: float, header: str, line) -> Path:  # noqa: ANN001
    marker = path.with_name(path.name + f".{mb:g}MB.done")
    if marker.exists() and path.exists():
        return path
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(header)
        gen = _rows(mb)
        block = next(gen)
        try:
            while True:
                text = "".join(
                    line(s, v) for s, v in zip(block[0].tolist(), block[1].tolist(), strict=True)
                )
                fh.write(text)
                block = gen.send(len(text))
        except StopIteration:
            pass
    marker.touch()
    return path


def gen_csv(d: Path, mb: float) -> Path:
    return _write_text(
        d / "wide.csv",
        mb,
        "step," + ",".join(METRICS) + "\n",
        lambda s, v: f"{s}," + ",".join(f"{x:.6g}" for x in v) + "\n",
    )


def gen_jsonl(d: Path, mb: float) -> Path:
    keys = [json.dumps(m) for m in METRICS]
    return _write_text(
        d / "log.jsonl",
        mb,
        "",
        lambda s, v: (
            f'{{"step": {s}, '
            + ", ".join(f"{k}: {x:.6g}" for k, x in zip(keys, v, strict=True))
            + "}\n"
        ),
    )


def gen_wandb_csv(d: Path, mb: float) -> Path:
    cols = ['"Step"'] + [f'"run-a - {m}"' + x for m in METRICS[:4] for x in ("", "__MIN", "__MAX")]
    return _write_text(
        d / "export.csv",
        mb,
        ",".join(cols) + "\n",
        lambda s, v: f"{s}," + ",".join(f"{x:.6g},{x:.6g},{x:.6g}" for x in v[:4]) + "\n",
    )


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _ld(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def gen_wandb_offline(d: Path, mb: float) -> Path:
    """LevelDB-log framed history records (research/formats.md section 8.2)."""
    run = d / "run-20240101_000000-bench"
    run.mkdir(exist_ok=True)
    path = run / "run-bench.wandb"
    marker = path.with_name(path.name + f".{mb:g}MB.done")
    if marker.exists() and path.exists():
        return path
    keys = [_ld(1, m.encode()) for m in METRICS]
    out = bytearray(b":W&B" + struct.pack("<HB", 0xBEE1, 0))
    with open(path, "wb") as fh:
        gen = _rows(mb)
        block = next(gen)
        try:
            while True:
                start = len(out)
                for s, v in zip(block[0].tolist(), block[1].tolist(), strict=True):
                    items = [
                        _ld(1, k + _ld(16, f"{x:.6g}".encode()))
                        for k, x in zip(keys, v, strict=True)
                    ]
                    items.append(_ld(1, _ld(1, b"_step") + _ld(16, str(s).encode())))
                    rec = _ld(2, b"".join(items))
                    left = 32768 - len(out) % 32768
                    if left < 7:
                        out += b"\0" * left
                        left = 32768
                    if len(rec) + 7 <= left:
                        out += struct.pack("<IHB", zlib.crc32(b"\x01" + rec), len(rec), 1) + rec
                        continue
                    pieces = [rec[: left - 7]]  # FIRST, then MIDDLE/LAST across blocks
                    rest = rec[left - 7 :]
                    while rest:
                        pieces.append(rest[: 32768 - 7])
                        rest = rest[32768 - 7 :]
                    for i, p in enumerate(pieces):
                        kind = 2 if i == 0 else 4 if i == len(pieces) - 1 else 3
                        out += struct.pack("<IHB", zlib.crc32(bytes([kind]) + p), len(p), kind) + p
                written = len(out) - start
                keep = len(out) - len(out) % 32768
                fh.write(out[:keep])
                del out[:keep]
                block = gen.send(written)
        except StopIteration:
            pass
        fh.write(out)
    marker.touch()
    return path


def gen_sparse(d: Path, gb: float) -> Path:
    path = d / "sparse.csv"
    with open(path, "wb") as fh:
        fh.truncate(int(gb * 2**30))
    return path


def _masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def gen_tb(d: Path, events: int, tags: int = 8) -> Path:
    """One event file of ``events`` add_scalar records (simple_value), ``tags`` tags per step."""
    from google_crc32c import value as crc32c

    tb = d / f"tb-{events}"
    tb.mkdir(exist_ok=True)
    path = tb / "events.out.tfevents.1700000000.bench.1.0"
    marker = tb / ".done"
    if marker.exists() and path.exists():
        return tb
    names = [m.encode() for m in METRICS[:tags]]
    rng = np.random.default_rng(0)
    steps_total = -(-events // tags)
    left = events
    with open(path, "wb") as fh:
        for lo in range(0, steps_total, 50000):
            hi = min(lo + 50000, steps_total)
            vals = rng.lognormal(0.0, 0.3, size=(hi - lo, tags)).astype(np.float32)
            out = []
            for i, s in enumerate(range(lo, hi)):
                head = b"\x09" + struct.pack("<d", 1.7e9 + s) + b"\x10" + _varint(s)
                for j, name in enumerate(names):
                    if left == 0:
                        break
                    left -= 1
                    val = b"\x0a" + bytes([len(name)]) + name + b"\x15" + vals[i, j].tobytes()
                    summ = b"\x0a" + bytes([len(val)]) + val
                    payload = head + b"\x2a" + bytes([len(summ)]) + summ
                    ln = struct.pack("<Q", len(payload))
                    out.append(
                        ln
                        + struct.pack("<I", _masked(crc32c(ln)))
                        + payload
                        + struct.pack("<I", _masked(crc32c(payload)))
                    )
            fh.write(b"".join(out))
    marker.touch()
    return tb


def _megatron_step(s: int, v: list[float]) -> str:
    return (
        f" iteration {s + 1:8d}/ 1000000 | consumed samples: {(s + 1) * 512:12d} | elapsed time"
        f" per iteration (ms): {v[6] * 1000:.1f} | learning rate: {v[2] * 1e-4:.3E} | global"
        f" batch size:   512 | lm loss: {v[0]:.6E} | loss scale: 65536.0 | grad norm:"
        f" {v[1]:.3f} | number of skipped iterations:   0 | number of nan iterations:   0 |"
        " samples per second: 123.456 | TFLOPs: 123.45 |\n"
        f"time (ms) | forward-backward: {v[6] * 900:.2f} | forward-compute: {v[6] * 300:.2f} |"
        f" backward-compute: {v[6] * 600:.2f} | optimizer: {v[7] * 10:.2f} | batch-generator:"
        " 1.23 | layernorm-grads-all-reduce: 0.02 | embedding-grads-all-reduce: 0.03\n"
        f"[Rank 0] (after {s + 1} iterations) memory (MB) | allocated: 12345.6 | max allocated:"
        " 23456.7 | reserved: 34567.0 | max reserved: 34567.0\n"
        "[2024-01-01 00:00:00,000] [INFO] [checkpointing.py:540:forward] Activation"
        " Checkpointing Information: partition_activations False, contiguous_memory_optimization"
        " False, cpu_checkpointing False, synchronize False, profile False\n"
    )


def _deepspeed_step(s: int, v: list[float]) -> str:
    over = (
        "[2024-01-01 00:00:00,000] [INFO] [fused_optimizer.py:362:_update_scale] [deepspeed]"
        " OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 65536, reducing to 32768\n"
        if s % 500 == 499
        else ""
    )
    return over + (
        f"[2024-01-01 00:00:00,000] [INFO] [logging.py:96:log_dist] [Rank 0] step={s + 1},"
        f" skipped={s // 500}, lr=[{v[2] * 1e-4:.6e}], mom=[(0.9, 0.95)]\n"
        f"[2024-01-01 00:00:00,000] [INFO] [timer.py:260:stop] epoch=0/micro_step={s + 1}/"
        f"global_step={s + 1}, RunningAvgSamplesPerSec={v[6] * 100:.4f},"
        f" CurrSamplesPerSec={v[6] * 100:.4f}, MemAllocated=12.35GB, MaxMemAllocated=23.46GB\n"
        f"[2024-01-01 00:00:00,000] [INFO] [logging.py:96:log_dist] [Rank 0] rank=0 time (ms) |"
        f" forward: {v[6] * 300:.2f} | backward: {v[6] * 600:.2f} | backward_inner:"
        f" {v[6] * 500:.2f} | backward_allreduce: {v[6] * 100:.2f} | step: {v[7] * 10:.2f}\n"
        f"{{'loss': {v[0]:.4f}, 'grad_norm': {v[1]:.4f}, 'learning_rate': {v[2] * 1e-4:.6e},"
        f" 'epoch': {s / 1e4:.4f}}}\n"
    )


def gen_megatron(d: Path, mb: float) -> Path:
    return _write_text(d / "megatron.log", mb, "using world size: 8\n", _megatron_step)


def gen_deepspeed(d: Path, mb: float) -> Path:
    return _write_text(d / "deepspeed.log", mb, "[deepspeed] world size 8\n", _deepspeed_step)


# --------------------------------------------------------------------------- measuring

_CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, sys.argv[1]) if sys.argv[1] else None
stage, path = sys.argv[2], sys.argv[3]
import numpy, pandas  # imported before the clock: the same fixed cost for every case
from stabdiag.sources import load
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
err, rows = "", 0
try:
    if stage == "analyze":
        from stabdiag.cli import app
        try:
            app(["analyze", path, "-f", "json", "-o", os.devnull, "--fail-on", "never"],
                standalone_mode=False)
        except SystemExit as exc:
            err = "" if not exc.code else f"exit {exc.code}"
    else:
        rows = len(load([path]).table)
except Exception as exc:  # the error line the user would see
    err = f"{type(exc).__name__}: {str(exc)[:150]}"
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"s": dt, "peak_mb": peak / 1024, "base_mb": base / 1024, "rows": rows,
                  "error": err}))
"""


def measure(path: Path, code: str, stage: str, env: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, code, stage, str(path)],
        text=True,
        capture_output=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        check=False,
    )
    if out.returncode != 0:
        return {
            "s": float("nan"),
            "peak_mb": float("nan"),
            "base_mb": float("nan"),
            "rows": 0,
            "error": f"child died (rc {out.returncode}): {out.stderr.strip()[-200:]}",
        }
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--case", action="append", choices=CASES, help="Case to run (repeatable; default: all)."
    )
    ap.add_argument(
        "--csv-mb",
        type=float,
        default=200.0,
        help="Size of the CSV, JSONL and W&B inputs in MB (the issue's case: 2048).",
    )
    ap.add_argument(
        "--text-mb",
        type=float,
        default=200.0,
        help="Size of the Megatron and DeepSpeed stdout logs in MB.",
    )
    ap.add_argument("--sparse-gb", type=float, default=5.0, help="Size of the sparse file in GB.")
    ap.add_argument(
        "--tb-events",
        type=int,
        default=2_000_000,
        help="Scalar events in the TensorBoard case (the issue's: 10M and 50M).",
    )
    ap.add_argument(
        "--dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "stabdiag-bench-memory",
        help="Where inputs are generated (and kept for the next run).",
    )
    ap.add_argument("--code", default="", help="Checkout to measure (default: the installed one).")
    ap.add_argument(
        "--stage",
        choices=("load", "analyze"),
        default="load",
        help="load: reader + long table; analyze: the whole analyze command.",
    )
    ap.add_argument("--json", action="store_true", help="One JSON object per case on stdout.")
    args = ap.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    cases = args.case or list(CASES)
    for case in cases:
        print(f"[{case}] generating input ...", file=sys.stderr, flush=True)
        if case == "csv":
            path, size = gen_csv(args.dir, args.csv_mb), f"{args.csv_mb:g} MB"
        elif case == "jsonl":
            path, size = gen_jsonl(args.dir, args.csv_mb), f"{args.csv_mb:g} MB"
        elif case == "wandb-csv":
            path, size = gen_wandb_csv(args.dir, args.csv_mb), f"{args.csv_mb:g} MB"
        elif case == "wandb-offline":
            path, size = gen_wandb_offline(args.dir, args.csv_mb), f"{args.csv_mb:g} MB"
        elif case == "sparse":
            path, size = gen_sparse(args.dir, args.sparse_gb), f"{args.sparse_gb:g} GB"
        elif case in ("megatron", "deepspeed"):
            gen = gen_megatron if case == "megatron" else gen_deepspeed
            path, size = gen(args.dir, args.text_mb), f"{args.text_mb:g} MB"
        else:
            path, size = gen_tb(args.dir, args.tb_events), f"{args.tb_events:,} events"
        runs = [("", {"STABDIAG_NO_CACHE": "1"})]
        if case == "tb-cached":
            with tempfile.TemporaryDirectory(dir=args.dir) as cdir:
                env = {"STABDIAG_CACHE_DIR": cdir, "STABDIAG_NO_CACHE": "0"}
                results = [
                    (label, measure(path, args.code, args.stage, env))
                    for label in ("cache write", "cache hit")
                ]
        else:
            results = [(label, measure(path, args.code, args.stage, env)) for label, env in runs]
        for label, r in results:
            name = f"{case} {label}".strip()
            if args.json:
                print(json.dumps({"case": name, "size": size, **r}))
            else:
                print(
                    f"{name:<24} {size:>18}  peak {r['peak_mb']:8.0f} MB  (imports "
                    f"{r['base_mb']:4.0f} MB)  {r['s']:7.1f} s  {r['rows']:>11,} rows"
                    + (f"  error: {r['error']}" if r["error"] else ""),
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
