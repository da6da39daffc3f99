"""The trainer's instruments report what they claim (issue 17, defects 1, 2, 4, 6, 7, 8, 10)."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pandas as pd
import pytest
import torch

from stabdiag import table as T
from stabdiag.errors import TrainError
from stabdiag.train import loop, resolve, train
from stabdiag.train.config import TrainConfig
from stabdiag.train.data import load_corpus
from stabdiag.train.dist import DistInfo
from stabdiag.train.model import GPT, max_logit
from stabdiag.train.writers import NullWriter


def _strict_json(path):
    def refuse(name):
        raise ValueError(f"bare {name} in {path}")

    return json.loads(path.read_text(), parse_constant=refuse)


def _wide(run_dir):
    frame = pd.read_csv(run_dir / "metrics.csv")
    return frame.pivot_table(index="step", columns="metric", values="value", dropna=False)


# ----------------------------------------------------------------------------- attention probe


def test_probe_does_not_overflow_under_fp16_autocast():
    q = torch.full((2, 1, 4, 16), 70.0, dtype=torch.float16)  # q.k = 78400 > fp16 max 65504
    with torch.autocast("cpu", dtype=torch.float16):
        naive = q.float() @ q.float().transpose(-2, -1)  # what the old probe did
        got = max_logit(q, q, 16)
    assert not torch.isfinite(naive).all()  # autocast undid the .float(): the bug reproduced
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, torch.tensor([70.0 * 70.0 * 16 / 4]))


def test_probe_is_the_batch_max_per_head_before_the_cap(monkeypatch):
    from stabdiag.train import model as model_mod

    monkeypatch.setattr(model_mod, "PROBE_ELEMENTS", 3 * 4 * 16 * 16)  # 3 sequences a product
    cfg = TrainConfig(n_layer=1, n_embd=32, n_head=4, block_size=16, softmax_cap=2.0)
    torch.manual_seed(0)
    model = GPT(cfg)
    attn = model.blocks[0].attn
    with torch.no_grad():
        attn.qkv.weight.mul_(20)  # logits far beyond the cap
    idx = torch.randint(256, (11, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, stats = model(idx, idx, probe=True)
        h = model.blocks[0].norm1(model.wte(idx) + model.wpe(torch.arange(16)))
        q, k, _ = attn.qkv(h).split(32, dim=2)
    q, k = (t.view(11, 16, 4, 8).transpose(1, 2).double() for t in (q, k))
    z = (q @ k.transpose(-2, -1)) / math.sqrt(8)
    z = z.masked_fill(~torch.ones(16, 16, dtype=torch.bool).tril(), float("-inf"))
    per_head = z.amax(dim=(0, 2, 3))  # (nh,) over all 11 sequences (4 products)
    assert stats["attn_logit_max"].shape == (1, 4)
    torch.testing.assert_close(stats["attn_logit_max"][0].double(), per_head, rtol=1e-5, atol=1e-3)
    assert per_head.max() > cfg.softmax_cap  # the pre-cap logit, not cap*tanh(z/cap)
    assert per_head.max() > z[0].amax()  # sequence 0 alone would miss the batch maximum


def test_written_probe_metrics_per_layer_and_head(tiny_overrides):
    result = train(resolve("tiny", "stable", overrides=[*tiny_overrides, "steps=6", "n_layer=2"]))
    wide = _wide(result.run_dir)
    heads = [f"{T.MAX_ATTN_LOGIT}/block{b}/head{h}" for b in range(2) for h in range(4)]
    assert set(heads) <= set(wide.columns)
    for b in range(2):
        layer = wide[[f"{T.MAX_ATTN_LOGIT}/block{b}/head{h}" for h in range(4)]].max(axis=1)
        np.testing.assert_allclose(wide[f"{T.MAX_ATTN_LOGIT}/block{b}"], layer)
    np.testing.assert_allclose(wide[T.MAX_ATTN_LOGIT], wide[heads].max(axis=1))


@pytest.mark.slow  # fp16 on CPU is slow: ~10 s idle, more on a loaded machine
def test_unstable_fp16_probe_is_finite_while_the_model_is(tmp_path):
    """The flagship `unstable` recipe: where the loss is finite and no step was skipped, the
    fp16 run's attention probe must be finite too (it used to overflow from step ~15)."""
    cfg = resolve(
        "tiny",
        "unstable",
        overrides=[f"out_dir={tmp_path}", "steps=20", "eval_interval=1000", "tensorboard=false"],
    )
    result = train(cfg)
    wide = _wide(result.run_dir)
    healthy = np.isfinite(wide[T.TRAIN_LOSS]) & (wide[T.SKIPPED_STEP] == 0)
    assert healthy.sum() >= 10
    assert np.isfinite(wide.loc[healthy, T.MAX_ATTN_LOGIT]).all(), wide.loc[
        healthy, T.MAX_ATTN_LOGIT
    ]
    _strict_json(result.run_dir / "run.json")  # and its run.json has no bare NaN


def test_run_json_is_strict_json_when_losses_are_nan(tmp_path):
    loop._write_json(tmp_path / "run.json", {"final_loss": float("nan"), "x": [float("inf"), 1.0]})
    assert _strict_json(tmp_path / "run.json") == {"final_loss": None, "x": [None, 1.0]}


# ----------------------------------------------------------------------------- tied head gradient


def _first_step_row(cfg: TrainConfig, state=None) -> dict[str, float]:
    torch.manual_seed(0)
    model = GPT(cfg)
    if state is not None:
        model.load_state_dict(state)
    corpus = load_corpus("synthetic", 20_000, 0)
    optimizer = loop.build_optimizer(model, cfg, torch.device("cpu"))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    lp = loop._Loop(
        cfg,
        DistInfo(),
        torch.device("cpu"),
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
    return dict(zip(lp.probes.names, lp.train_step(0).tolist(), strict=True)), model


def test_tied_head_grad_norm_is_the_output_projection_gradient():
    base = dict(n_layer=1, n_embd=32, n_head=4, block_size=16, batch_size=4, grad_clip=0.0)
    tied, tied_model = _first_step_row(TrainConfig(**base, tie_embeddings=True))
    torch.manual_seed(0)
    same = GPT(TrainConfig(**base, tie_embeddings=True)).state_dict()  # weights before the step
    untied, _ = _first_step_row(TrainConfig(**base, tie_embeddings=False), state=same)
    head = T.GRAD_NORM_PREFIX + "head"
    # Same weights, same batch: the output projection's gradient is the same with or without
    # tying; the old code reported only the final norm's gain here.
    assert tied[head] == pytest.approx(untied[head], rel=1e-5)
    assert tied_model.head_grad_sq is None  # consumed by the step, never carried over


# ----------------------------------------------------------------------------- tokens/s, threads


def test_tokens_per_s_does_not_drop_after_eval(tiny_overrides, monkeypatch):
    real = loop._Loop.evaluate

    def slow_eval(self):
        real(self)
        time.sleep(1.0)  # an eval far slower than 5 training steps

    monkeypatch.setattr(loop._Loop, "evaluate", slow_eval)
    cfg = resolve(
        "tiny",
        "stable",
        overrides=[
            *tiny_overrides,
            "steps=20",
            "log_interval=5",
            "eval_interval=5",
            "tensorboard=false",
        ],
    )
    tps = _wide(train(cfg).run_dir)[T.TOKENS_PER_S].dropna()
    assert list(tps.index) == [4, 9, 14, 19]
    assert (tps.iloc[1:] > 0.3 * tps.iloc[0]).all(), tps.tolist()  # with the bug: ~0.1x


def test_threads_are_chosen_not_defaulted(tiny_overrides, monkeypatch):
    cpu = torch.device("cpu")
    tiny = resolve("tiny", "stable")
    monkeypatch.setattr(loop, "available_cores", lambda: 8)
    torch.set_num_threads(8)
    try:
        assert loop.choose_threads(tiny, 100_000, DistInfo(), cpu) == 1
        assert loop.choose_threads(tiny, 2_000_000, DistInfo(), cpu) == 5
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
        assert loop.choose_threads(tiny, 2_000_000, DistInfo(0, 0, 4), cpu) == 2
        monkeypatch.delenv("LOCAL_WORLD_SIZE")
        torch.set_num_threads(3)  # OMP_NUM_THREADS or a caller's setting caps the choice
        assert loop.choose_threads(tiny, 2_000_000, DistInfo(), cpu) == 3
        assert loop.choose_threads(resolve(overrides=["threads=6"]), 1, DistInfo(), cpu) == 6
    finally:
        torch.set_num_threads(1)
    result = train(resolve("tiny", "stable", overrides=[*tiny_overrides, "steps=3"]))
    assert result.threads == 1 and torch.get_num_threads() == 1
    assert _strict_json(result.run_dir / "run.json")["threads"] == 1


# ----------------------------------------------------------------------------- injections


def test_injection_after_the_last_step_is_an_error_before_training():
    with pytest.raises(
        TrainError, match=r"bad_batch@300': step 300 is after the run's last step \(299"
    ):
        resolve("tiny", "stable", overrides=["inject=bad_batch@300"])
    resolve("tiny", "stable", overrides=["inject=bad_batch@299"])


def test_cli_injection_after_the_end_is_one_line_exit_2(tmp_path):
    from typer.testing import CliRunner

    from stabdiag.cli import app

    result = CliRunner().invoke(
        app,
        [
            "train",
            "--steps",
            "50",
            "--inject",
            "lr_spike@60",
            "--out",
            str(tmp_path),
            "--no-analyze",
        ],
    )
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "after the run's last step (49" in lines[0], result.output
    assert not any(tmp_path.iterdir())
