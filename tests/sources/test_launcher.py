"""torchrun output read as one run with a rank per process (--tee prefixes, --log-dir folders)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stabdiag import sources
from stabdiag.diagnose import diagnose
from stabdiag.sources import launcher, sniff

RANKS = 4
BAD = 2


def _nanogpt_lines(rank: int, steps: int = 30, bad_from: int = 12) -> list[str]:
    out = []
    for s in range(steps):
        loss = 3.0 * np.exp(-s / 10) + 0.5 + 0.01 * rank
        if rank == BAD and s >= bad_from:
            loss *= 6.0
        out.append(f"iter {s}: loss {loss:.4f}, time 10.00ms, mfu 1.00%")
    return out


def _interleave(per_rank: dict[int, list[str]], prefix: str = "default") -> str:
    """Lines of all ranks in a shuffled-but-per-rank-ordered arrival order, like a console."""
    rng = np.random.default_rng(0)
    queues = {r: list(lines) for r, lines in per_rank.items()}
    out = ["W1201 12:00:00.000 torch/distributed/run.py Setting OMP_NUM_THREADS to 1"]
    while any(queues.values()):
        r = int(rng.choice([r for r, q in queues.items() if q]))
        out.append(f"[{prefix}{r}]:{queues[r].pop(0)}")
    return "\n".join(out) + "\n"


def _one_run(paths):
    res = sources.load(paths)
    assert len(res.runs) == 1, [r.name for r in res.runs]
    return res


@pytest.mark.parametrize("prefix", ["default", "rank"])
@pytest.mark.parametrize("name", ["train.log", "out.txt", "slurm-42.out"])
def test_tee_file_is_one_run_with_ranks(tmp_path, prefix, name):
    p = tmp_path / "job" / name
    p.parent.mkdir()
    p.write_text(_interleave({r: _nanogpt_lines(r) for r in range(RANKS)}, prefix))
    assert sniff.sniff(p) == "nanogpt"
    res = _one_run([p])
    f = res.table.frame
    assert sorted(f["rank"].unique().tolist()) == list(range(RANKS))
    r2 = f[(f["rank"] == BAD) & (f["metric"] == "train/loss")].sort_values("step")
    expected = [float(ln.split("loss ")[1].split(",")[0]) for ln in _nanogpt_lines(BAD)]
    assert r2["value"].tolist() == expected and r2["step"].tolist() == list(range(30))
    info = res.runs[0]
    assert info.meta["launcher"] == "torchrun --tee" and info.meta["ranks"] == [0, 1, 2, 3]
    assert any("4 ranks" in w and "1 lines without a rank prefix" in w for w in info.warnings)


def test_ranks_that_first_speak_past_the_sniffing_head(tmp_path):
    banner = [f"[default0]:config option_{i} = {'x' * 60}" for i in range(1500)]  # > 64 KiB
    p = tmp_path / "train.log"
    p.write_text(
        "\n".join(banner) + "\n" + _interleave({r: _nanogpt_lines(r) for r in range(RANKS)})
    )
    assert p.stat().st_size > 64 * 1024
    res = _one_run([p])
    assert sorted(res.table.frame["rank"].unique().tolist()) == list(range(RANKS))


def test_tee_of_megatron_and_hf_lines(tmp_path):
    """Any inner text format: Megatron iteration lines and HF Trainer dicts behind prefixes."""
    meg = {
        r: [
            f" iteration {s}/ 100 | consumed samples: {8 * s} | lm loss: {5.0 - 0.1 * s + r:.6E} |"
            f" loss scale: 1024.0 | grad norm: 1.000 | number of skipped iterations: 0 |"
            for s in range(1, 11)
        ]
        for r in range(3)
    }
    p = tmp_path / "meg.log"
    p.write_text(_interleave(meg, "rank"))
    res = _one_run([p])
    assert res.runs[0].format == "megatron"
    loss = res.table.frame.query("metric == 'train/loss'")
    assert sorted(loss["rank"].unique()) == [0, 1, 2]
    assert loss.query("rank == 1 and step == 1")["value"].item() == pytest.approx(5.9)

    hf = {
        r: [
            f"{{'loss': {2.0 - 0.01 * s:.4f}, 'learning_rate': 1e-05, 'epoch': {s / 10}}}"
            for s in range(1, 8)
        ]
        for r in range(2)
    }
    q = tmp_path / "hf.txt"
    q.write_text(_interleave(hf))
    res = _one_run([q])
    # both ranks printed the same (all-reduced) values: read once, no rank column
    assert "rank" not in res.table.frame.columns
    assert any("identical values; read once" in w for w in res.runs[0].warnings)
    assert len(res.table.frame.query("metric == 'train/loss'")) == 7


_INNER = {
    "llmc": lambda r, s: f"s:{s} trl:{3.0 - 0.01 * s + r * 0.001:.4f} lr:0.0001 norm:1.{r}",
    "torchtitan": lambda r, s: (
        f"[titan] 2024-01-01 00:00:00,000 - root - INFO - step: {s}  loss: "
        f"{3.0 - 0.01 * s + r * 0.001:.4f}  memory: 1.0GiB(1.00%)  tps: 1000  mfu: 1.00%"
    ),
    "fairseq": lambda r, s: (
        f"2020-01-01 00:00:00 | INFO | train_inner | epoch 001:     {s} / 100 "
        f"loss={3.0 - 0.01 * s + r * 0.001:.3f}, ppl=8, wps=1, ups=1, wpb=1, bsz=1, "
        f"num_updates={s}, lr=0.0001, gnorm=1.0{r}, loss_scale=8, train_wall=1, wall=1"
    ),
}


@pytest.mark.parametrize("fmt", sorted(_INNER))
def test_tee_of_other_text_formats(tmp_path, fmt):
    p = tmp_path / "console.txt"
    p.write_text(
        _interleave({r: [_INNER[fmt](r, s) for s in range(1, 21)] for r in range(3)}, "rank")
    )
    res = _one_run([p])
    assert res.runs[0].format == fmt
    loss = res.table.frame.query("metric == 'train/loss'")
    assert sorted(loss["rank"].unique().tolist()) == [0, 1, 2]
    assert (loss.groupby("rank")["step"].nunique() == 20).all()


def test_log_dir_entry_and_tee_helpers(tmp_path):
    p = tmp_path / "logs" / "job_1" / "attempt_2" / "3" / "stderr.log"
    assert launcher.log_dir_entry(p) == (tmp_path / "logs" / "job_1", 2, 3)
    assert launcher.log_dir_entry(tmp_path / "attempt_0" / "x" / "stdout.log") is None
    assert launcher.log_dir_entry(tmp_path / "attempt_0" / "0" / "train.log") is None
    assert launcher.tee_ranks("[default0]:a\n[rank12]:b\n x [default3]: not at line start") == {
        0,
        12,
    }
    per, other = launcher.split_tee("hello\n[rank1]:b1\n[rank0]:a0\n[rank1]:b2\n")
    assert per == {0: "a0", 1: "b1\nb2"} and other == 1


def _write_log_dir(root: Path, attempts: dict[int, dict[int, list[str]]]) -> Path:
    run = root / "none_abc123"
    for a, per_rank in attempts.items():
        for r, lines in per_rank.items():
            d = run / f"attempt_{a}" / str(r)
            d.mkdir(parents=True)
            (d / "stdout.log").write_text("\n".join(lines) + "\n")
            (d / "stderr.log").write_text("W1201 some warning from the rank\n")
    return run


def test_log_dir_layout_is_one_run(tmp_path):
    run_dir = _write_log_dir(tmp_path / "logs", {0: {r: _nanogpt_lines(r) for r in range(RANKS)}})
    res = _one_run([tmp_path / "logs"])
    info = res.runs[0]
    assert info.name == "none_abc123" and info.format == "nanogpt"
    assert info.meta["launcher"] == "torchrun --log-dir"
    f = res.table.frame
    assert sorted(f["rank"].unique().tolist()) == list(range(RANKS))
    assert (f.groupby("rank")["step"].nunique() == 30).all()
    assert info.path == str(run_dir)


def test_log_dir_attempts_are_one_run_with_a_restart(tmp_path):
    first = {r: _nanogpt_lines(r, steps=20) for r in range(2)}
    second = {r: _nanogpt_lines(r, steps=30)[10:] for r in range(2)}  # resumed from step 10
    _write_log_dir(tmp_path, {0: first, 1: second})
    res = _one_run([tmp_path])
    f = res.table.frame
    restarts = f[f["metric"] == "meta/restart"]
    assert sorted(restarts["rank"].tolist()) == [0, 1]
    assert restarts["step"].tolist() == [10, 10]
    assert any("2 attempt(s)" in w for w in res.runs[0].warnings)


def test_rank_divergence_names_the_rank_on_a_tee_file(tmp_path):
    p = tmp_path / "train.log"
    p.write_text(_interleave({r: _nanogpt_lines(r) for r in range(RANKS)}))
    report = diagnose([p], jobs=1)
    found = [f for f in report.findings if f.kind == "rank-divergence"]
    assert found and all(f"rank {BAD}" in f.message for f in found)


_TRAIN = """
import torch, torch.distributed as dist
torch.set_num_threads(1)
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = torch.nn.Linear(8, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.05)
g = torch.Generator().manual_seed(1 + rank)
w = torch.randn(8, 1, generator=torch.Generator().manual_seed(123))
for step in range(40):
    x = torch.randn(32, 8, generator=g)
    y = x @ w
    if rank == BAD and step >= 15:  # a corrupted shard: targets that are pure noise
        y = 4.0 * torch.randn(32, 1, generator=g)
    loss = ((model(x) - y) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    for p in model.parameters():
        dist.all_reduce(p.grad)
        p.grad /= dist.get_world_size()
    opt.step()
    print(f"iter {step}: loss {loss.item():.4f}, time 1.00ms", flush=True)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_real_torchrun_tee_and_log_dir(tmp_path):
    """torchrun --nproc_per_node 4 on CPU (gloo), once: --tee to a file and --log-dir at once."""
    pytest.importorskip("torch")
    script = tmp_path / "train.py"
    script.write_text(_TRAIN.replace("BAD", str(BAD)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "out.txt"
    with out.open("wb") as fh:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node",
                str(RANKS),
                "--log-dir",
                str(tmp_path / "logs"),
                "--redirects",
                "3",
                "--tee",
                "3",
                str(script),
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=240,
            check=False,
        )
    assert proc.returncode == 0, out.read_text(errors="replace")[-2000:]
    (tmp_path / "logs").rename(tmp_path / "logdir")  # the two layouts as separate inputs
    for path, how in ((out, "torchrun --tee"), (tmp_path / "logdir", "torchrun --log-dir")):
        res = _one_run([path])
        assert res.runs[0].meta["launcher"] == how
        assert sorted(res.table.frame["rank"].unique().tolist()) == list(range(RANKS))
        report = diagnose([path], jobs=1)
        div = [f for f in report.findings if f.kind == "rank-divergence"]
        assert div, [f.message for f in report.findings]
        assert {f.evidence.get("rank") for f in div} == {BAD}
        assert all(f"rank {BAD}" in f.message for f in div)
    shutil.rmtree(tmp_path / "logdir")
