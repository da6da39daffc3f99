"""Instrumentation overhead: the instrumented training step vs a plain one, same model and data.

The plain step is what nanoGPT does: forward, backward, clip, optimizer step. The instrumented
step is stabdiag.train.loop's (pre-clip and per-layer grad norms, update/param norm ratio, loss
scale, max attention logit, output log-Z, activation RMS, one host transfer per log interval).
Rounds alternate plain/instrumented so drift in a shared machine's load hits both alike.

    python benchmarks/bench_instrumentation.py [--preset small] [--steps 40] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from stabdiag.train.config import resolve
from stabdiag.train.data import get_batch, load_corpus
from stabdiag.train.dist import DistInfo
from stabdiag.train.loop import _Loop, build_optimizer, lr_at, pick_device
from stabdiag.train.model import GPT
from stabdiag.train.writers import NullWriter


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_loop(cfg, device, corpus) -> _Loop:
    torch.manual_seed(cfg.seed)
    model = GPT(cfg).to(device)
    optimizer = build_optimizer(model, cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    return _Loop(
        cfg,
        DistInfo(),
        device,
        corpus,
        model,
        model,
        optimizer,
        scaler,
        (),
        NullWriter(),
        None,
        None,
    )


def plain_steps(loop: _Loop, first: int, n: int) -> float:
    """nanoGPT's step: no probes, clip_grad_norm_'s return value dropped, scale never read."""
    cfg, model, opt, scaler = loop.cfg, loop.model, loop.optimizer, loop.scaler
    _sync(loop.device)
    t0 = time.perf_counter()
    for step in range(first, first + n):
        x, y = get_batch(
            loop.corpus.train, cfg.batch_size, cfg.block_size, seed=cfg.seed, step=step
        )
        x, y = x.to(loop.device), y.to(loop.device)
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step)
        with loop.autocast:
            loss, _ = model(x, y, z_loss=cfg.z_loss)
        scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % cfg.log_interval == 0:
            loss.item()  # even a plain loop looks at its loss once per log interval
    _sync(loop.device)
    return n * cfg.batch_size * cfg.block_size / (time.perf_counter() - t0)


def instrumented_steps(loop: _Loop, first: int, n: int) -> float:
    _sync(loop.device)
    t0 = time.perf_counter()
    for step in range(first, first + n):
        loop.buffer.append(loop.train_step(step))
        loop.step = step + 1
        if loop.step % loop.cfg.log_interval == 0:
            loop.flush()
    loop.flush()
    _sync(loop.device)
    return n * loop.cfg.batch_size * loop.cfg.block_size / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--recipe", default="stable")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=60, help="timed steps of each kind")
    ap.add_argument("--chunk", type=int, default=0, help="steps per alternation (0 = log_interval)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--set", action="append", default=[], help="extra config key=value")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = resolve(args.preset, args.recipe, overrides=[f"device={args.device}", *args.set])
    chunk = args.chunk or cfg.log_interval
    device = pick_device(cfg, DistInfo())
    corpus = load_corpus(cfg.data, cfg.data_max_bytes, cfg.seed)
    plain_loop, inst_loop = make_loop(cfg, device, corpus), make_loop(cfg, device, corpus)
    plain_steps(plain_loop, 0, 3)  # warm up allocators and kernels
    instrumented_steps(inst_loop, 0, 3)
    # Alternate short chunks (one log interval each, so the instrumented chunk includes its one
    # host transfer) so that a shared machine's load drift hits both kinds alike.
    plain, inst = [], []
    for first in range(3, 3 + args.steps, chunk):
        plain.append(plain_steps(plain_loop, first, chunk))
        inst.append(instrumented_steps(inst_loop, first, chunk))
    tokens = chunk * cfg.batch_size * cfg.block_size
    p_time = sum(tokens / v for v in plain)
    i_time = sum(tokens / v for v in inst)
    ratios = [pv / iv for pv, iv in zip(plain, inst, strict=True)]
    print(
        f"device={device} preset={args.preset} precision={cfg.precision} "
        f"threads={torch.get_num_threads()} steps={len(plain) * chunk} chunk={chunk}"
    )
    print(f"plain        {tokens * len(plain) / p_time:10.0f} tokens/s")
    print(f"instrumented {tokens * len(inst) / i_time:10.0f} tokens/s")
    print(
        f"overhead     {100 * (i_time / p_time - 1):+.1f}% total time, "
        f"{100 * (statistics.median(ratios) - 1):+.1f}% median of paired chunks"
    )


if __name__ == "__main__":
    main()
