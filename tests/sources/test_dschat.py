"""DeepSpeed-Chat logs: two engines (actor, critic) as two series families, PPO/RL values, ppl,
reward-model accuracy, and the fp16 precision hint in the run's meta."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from stabdiag import sources
from stabdiag.sources import deepspeed

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "real_logs"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="shared/real_logs not available")

TS = "[2023-04-18 08:48:01,543] [INFO]"


def _ov(att: int, new: int | None) -> str:
    tail = f"reducing to {new}" if new else "but hysteresis is 2. Reducing hysteresis to 1"
    return (
        f"{TS} [loss_scaler.py:181:update_scale] [deepspeed] OVERFLOW! Rank 0 Skipping step. "
        f"Attempted loss scale: {att}, {tail}"
    )


def _eng(step: int, skipped: int, lr: float) -> str:
    return f"{TS} [logging.py:96:log_dist] [Rank 0] step={step}, skipped={skipped}, lr=[{lr}, {lr}], mom=[(0.9, 0.95)]"


def _ppo(epoch: int, step: int, act: float, cri: float) -> list[str]:
    return [
        f"epoch: {epoch}|step: {step}|ppo_ep: 1|act_loss: {act}|cri_loss: {cri}|unsuper_loss: 0.0",
        f"average reward score: {0.1 * step}",
        "-" * 20,
    ]


def _series(run, name):
    m = run.codes == run.names.index(name)
    return list(zip(run.steps[m].tolist(), run.values[m].tolist(), strict=True))


def _rlhf_log() -> str:
    """Per PPO step: actor.step() then critic.step(); engine lines every 2 engine steps.

    Actor: overflows at PPO steps 0 (65536 -> 32768), 1 (32768 -> 16384) and, after an unprinted
    regrowth 16384 -> 32768, at step 5 (32768 -> 16384). Critic: overflows at steps 0 (65536 ->
    32768) and 3 (32768 -> 16384). At step 3 the chain decides (the critic is at 32768, the actor
    at 16384); at step 5 both engines are at 16384 and would need the same regrowth: the stepping
    order decides (the actor steps first)."""
    lines = ["Beginning of Epoch 1/2, Total Generation Batches 3"]
    events = {
        0: [_ov(65536, 32768), _ov(65536, 32768)],
        1: [_ov(32768, 16384)],
        3: [_ov(32768, 16384)],
        5: [_ov(32768, 16384)],
    }
    skipped = [0, 0]
    for s in range(6):
        for ln in events.get(s, []):
            lines.append(ln)
        # who overflowed at this step (for the engine lines' cumulative counts)
        skipped[0] += s in (0, 1, 5)
        skipped[1] += s in (0, 3)
        if (s + 1) % 2 == 0:
            lines += [
                _eng(s + 1, skipped[0], 1e-5 * (s + 1)),
                _eng(s + 1, skipped[1], 5e-6 * (s + 1)),
            ]
        epoch, local = divmod(s, 3)
        lines += _ppo(epoch, local, 0.5 - 0.1 * s, 0.2 + 0.01 * s)
    return "\n".join(lines) + "\n"


def test_two_engines_are_two_series_families(tmp_path):
    p = tmp_path / "actor_critic.log"
    p.write_text(_rlhf_log())
    [run] = deepspeed.read(p)
    assert _series(run, "skipped_step") == [(0, 1.0), (1, 1.0), (5, 1.0)]
    assert _series(run, "critic/skipped_step") == [(0, 1.0), (3, 1.0)]
    assert _series(run, "loss scale") == [(0, 32768.0), (1, 16384.0), (4, 32768.0), (5, 16384.0)]
    assert _series(run, "critic/loss_scale") == [(0, 32768.0), (3, 16384.0)]
    # the engines' own cumulative counts agree with the attribution: no uncertainty warning
    assert not any("uncertain" in w for w in run.warnings)
    assert _series(run, "skipped (cumulative)") == [(1, 2.0), (3, 2.0), (5, 3.0)]
    assert _series(run, "critic/skipped (cumulative)") == [(1, 1.0), (3, 2.0), (5, 2.0)]
    assert _series(run, "critic/lr")[0] == (1, 1e-5)
    # PPO values on the printed PPO step, continued over epochs (3 batches per epoch)
    assert [s for s, _ in _series(run, "rl/loss")] == list(range(6))
    assert _series(run, "rl/value/loss")[4] == (4, pytest.approx(0.24))
    assert _series(run, "rl/reward")[5] == (5, pytest.approx(0.2))  # printed as step 2 of epoch 1
    assert run.meta["engines"] == ["actor", "critic"] and run.meta["rl"] == "ppo"


def test_attribution_disagreement_is_reported(tmp_path):
    text = "\n".join(
        [
            _ov(1024, 512),
            *_ppo(0, 0, 0.1, 0.1),
            _eng(1, 0, 1e-5),
            _eng(1, 1, 1e-5),
            *_ppo(0, 1, 0.1, 0.1),
        ]
    )
    p = tmp_path / "ppo.log"
    p.write_text(text)
    [run] = deepspeed.read(p)
    assert any("the actor reports 0 skipped steps but 1 overflow" in w for w in run.warnings)


def test_newer_dschat_spelling_and_ema_reward(tmp_path):
    text = (
        "Epoch: 0 | Step: 0 | PPO Epoch: 1 | Actor Loss: -0.25 | Critic Loss: 0.5 | "
        "Unsupervised Loss: 0.0\nAverage reward score: 1.5 | EMA reward score: 1.25\n"
        f"{_eng(1, 0, 1e-5)}\n"
    )
    p = tmp_path / "step3.log"
    p.write_text(text)
    assert deepspeed.looks_like(p, text)
    [run] = deepspeed.read(p)
    assert _series(run, "rl/loss") == [(0, -0.25)]
    assert _series(run, "rl/value/loss") == [(0, 0.5)]
    assert _series(run, "rl/reward_ema") == [(0, 1.25)]


def test_single_engine_ppl_and_provenance(tmp_path):
    text = (
        "\n".join(
            [
                "***** Evaluating perplexity, Epoch 0/2 *****",
                "ppl: 4998.29638671875",
                "Beginning of Epoch 1/2, Total Micro Batches 4",
                _ov(65536, None),
                _ov(65536, 32768),
                _eng(4, 2, 9e-6),
                "***** Evaluating perplexity, Epoch 1/2 *****",
                "ppl: 2.0179834365844727",
            ]
        )
        + "\n"
    )
    p = tmp_path / "sft.log"
    p.write_text(text)
    res = sources.load([p])
    f = res.table.frame
    ppl = f[f["metric"] == "val/ppl"]
    assert list(zip(ppl["step"], ppl["value"], strict=True)) == [
        (0, 4998.29638671875),
        (4, 2.0179834365844727),
    ]
    loss = f[f["metric"] == "val/loss"]["value"].tolist()
    assert loss == pytest.approx([math.log(4998.29638671875), math.log(2.0179834365844727)])
    why = {taken: w for _, taken, w in res.runs[0].mapping}
    assert "ln of the DeepSpeed-Chat evaluation perplexity" in why["val/loss"]
    assert "computed" in why["val/loss"]
    assert f[f["metric"] == "train/lr"]["value"].tolist() == [9e-6]
    meta = res.runs[0].meta
    assert meta["precision"] == "fp16" and "loss scale" in meta["precision_evidence"]


def test_precision_hint_from_scaler_file_and_not_from_unit_scale(tmp_path):
    out = tmp_path / "out"
    (out / "checkpoint-10").mkdir(parents=True)
    (out / "trainer_state.json").write_text(
        '{"global_step": 10, "log_history": [{"loss": 2.0, "step": 5}, {"loss": 1.5, "step": 10}]}'
    )
    scaler = out / "checkpoint-10" / "scaler.pt"
    scaler.write_bytes(b"\x80\x04 not a pickle we would ever open")
    info = sources.load([out]).runs[0]
    assert info.meta["precision"] == "fp16"
    assert str(scaler) in info.meta["precision_evidence"]

    meg = tmp_path / "bf16.log"  # Megatron prints loss scale 1.0 when no scaler is in use
    meg.write_text(
        "".join(
            f" iteration {i}/ 100 | consumed samples: {i} | lm loss: {3.0 - 0.01 * i:.6E} | "
            "loss scale: 1.0 | grad norm: 1.000 | number of skipped iterations: 0 |\n"
            for i in range(1, 6)
        )
    )
    assert "precision" not in sources.load([meg]).runs[0].meta


@needs_real
def test_real_rlhf_log_actor_and_critic():
    p = next((REAL / "dschat_rlhf_ppo").glob("*.log"))
    res = sources.load([p])
    assert len(res.runs) == 1
    info = res.runs[0]
    f = res.table.frame
    counts = f.groupby("metric").size()
    for m in ("rl/loss", "rl/value/loss", "rl/reward", "rl/unsupervised_loss"):
        assert counts[m] == 477
    assert "train/loss" not in counts
    # 14 OVERFLOW lines: 7 per engine, matching both engines' final 'skipped=7' engine lines
    assert counts["train/skipped_step"] == 7 and counts["critic/skipped_step"] == 7
    assert not any("uncertain" in w for w in info.warnings)
    actor = f[f["metric"] == "train/loss_scale"].sort_values("step")
    assert actor["value"].min() == 1024.0 and actor["step"].max() == 96
    critic = f[f["metric"] == "critic/loss_scale"].sort_values("step")
    assert critic["value"].tolist()[-3:] == [8192.0, 8192.0, 4096.0]  # regrown, then overflowed
    assert info.meta["precision"] == "fp16"


@needs_real
def test_real_sft_and_reward_model_logs():
    sft = sources.load([REAL / "dschat_sft_opt13b"])
    f = sft.table.frame
    ppl = f[f["metric"] == "val/ppl"].sort_values("step")
    assert len(ppl) == 17 and ppl["value"].iloc[0] == pytest.approx(4998.29638671875)
    assert ppl["step"].tolist()[:2] == [0, 460]  # before training, after epoch 1 (460 steps)
    assert sft.runs[0].meta["precision"] == "fp16"

    rm = sources.load([REAL / "dschat_rm_opt350m"])
    g = rm.table.frame
    acc = g[g["metric"] == "val/acc"].sort_values("step")
    assert list(zip(acc["step"], acc["value"].round(4), strict=True)) == [
        (0, 0.4924),
        (1840, 0.6995),
    ]
    assert len(g[g["metric"] == "val/chosen_last_scores"]) == 2


def test_one_repeated_engine_step_is_a_resume_not_a_second_engine(tmp_path):
    lines = [_eng(10 * k, 0, 1e-5) for k in range(1, 6)]
    lines += [_eng(50, 1, 2e-5), _ov(1024, 512)] + [_eng(10 * k, 1, 1e-5) for k in range(6, 9)]
    p = tmp_path / "resumed.log"
    p.write_text("\n".join(lines) + "\n")
    [run] = deepspeed.read(p)
    assert "engines" not in run.meta
    assert not any(n.startswith("critic/") for n in run.names)
    assert _series(run, "skipped_step") == [(51, 1.0)]
