"""Issue 14: the run's own configuration, a diagnosis, remedies that fit.

Configs are read from files written by the real writers (HF Trainer's TensorBoard text summaries
and trainer_state.json, Lightning's hparams.yaml, Megatron/DeepSpeed argument dumps in the shared
real logs); the rules (never advise what is in place, no contradictions, at most 6, one per kind
of change, framework phrasing, injected events named) are checked on runs with known configs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from common_util import finding, make_run

from stabdiag import runconfig as rc
from stabdiag import sources
from stabdiag.diagnose import diagnose
from stabdiag.diagnosis import diagnose_run
from stabdiag.findings import Severity
from stabdiag.remedies import MAX_PER_RUN, suggest
from stabdiag.sources import configs

REAL = Path(__file__).resolve().parents[2] / "shared" / "real_logs"


def with_config(run, cfg=None, **settings):  # noqa: ANN001, ANN201
    fw = settings.pop("framework", "")
    cfg = cfg or rc.build([("config.json", settings)], framework=fw, framework_source="test")
    return type(run)(name=run.name, series=run.series, meta={**run.meta, "run_config": cfg})


def text_of(rems) -> str:  # noqa: ANN001
    return json.dumps([r.to_dict() for r in rems])


def _loaded_config(path: Path) -> rc.RunConfig:
    loaded = sources.load([path])
    assert loaded.runs, path
    return loaded.runs[0].meta["run_config"]


# --------------------------------------------------------------------------- reading configs


def test_hf_trainer_tensorboard_args_and_trainer_state(tmp_path: Path) -> None:
    """A real HF Trainer run on a tiny GPT-2 (CPU): TrainingArguments come from args/text_summary,
    the model from model_config/text_summary, the framework is HF and the advice says max_grad_norm=."""
    pytest.importorskip("transformers")
    pytest.importorskip("tensorboard")
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(
            n_layer=2,
            n_embd=16,
            n_head=2,
            vocab_size=64,
            n_positions=16,
            bos_token_id=0,
            eos_token_id=0,
        )
    )
    data = [
        {"input_ids": torch.randint(0, 64, (16,)), "labels": torch.randint(0, 64, (16,))}
        for _ in range(16)
    ]
    out = tmp_path / "hf_out"
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=6,
        learning_rate=0.03,
        warmup_steps=0,
        lr_scheduler_type="constant",
        max_grad_norm=1.0,
        adam_beta2=0.95,
        per_device_train_batch_size=4,
        logging_steps=1,
        save_strategy="no",
        report_to=["tensorboard"],
        use_cpu=True,
        disable_tqdm=True,
    )
    Trainer(model=model, args=args, train_dataset=data).train()
    cfg = _loaded_config(next(out.rglob("events.out.tfevents*")).parent)
    assert cfg.fw == rc.HF
    assert (
        cfg.get("lr") == pytest.approx(0.03) and cfg.get("clip") == 1.0 and cfg.get("beta2") == 0.95
    )
    assert (
        cfg.get("warmup_steps") == 0
        and cfg.get("schedule") == "constant"
        and cfg.get("precision") == "fp32"
    )
    assert cfg.get("n_layer") == 2 and cfg.get("d_model") == 16 and cfg.get("vocab_size") == 64
    assert "args/text_summary" not in cfg.lr.source and "args: learning_rate" in cfg.lr.source
    assert "LR 0.03 constant, no warm-up, clip 1" in cfg.line()
    # advice for this run is in HF's terms and never re-advises clip 1.0 / beta2 0.95 / bf16
    steps = np.arange(1, 200)
    run = with_config(
        make_run(train__loss=(steps, np.ones(199)), train__lr=(steps, np.full(199, 0.03))), cfg
    )
    rems = suggest(
        [finding("nonfinite", Severity.ERROR, 20), finding("grad-explosion", Severity.ERROR, 15)],
        {"r": run},
    )
    t = text_of(rems)
    assert (
        "learning_rate=3.00e-03" in t
        and "10x below the configured peak 0.03 (the nonfinite at step 20)" in t
    )
    assert "keep max_grad_norm=1" in t and "max_grad_norm=" not in t.replace(
        "keep max_grad_norm=1", ""
    )
    assert (
        "beta2" not in {r.change for r in rems}
        and "gradient_clip_val" not in t
        and "--clip-grad" not in t
    )


def test_lightning_hparams_yaml_and_phrasing(tmp_path: Path) -> None:
    """Lightning's own CSVLogger + save_hyperparameters(): lr and betas from hparams.yaml, the
    framework is Lightning and a clip is phrased Trainer(gradient_clip_val=...)."""
    L = pytest.importorskip("lightning.pytorch")
    import torch

    torch.set_num_threads(1)

    class Tiny(L.LightningModule):
        def __init__(self, lr: float = 0.02, beta2: float = 0.99, n_layers: int = 3) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.lin = torch.nn.Linear(4, 1)

        def training_step(self, batch, _):  # noqa: ANN001, ANN202
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.lin(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):  # noqa: ANN202
            return torch.optim.AdamW(
                self.parameters(), lr=self.hparams.lr, betas=(0.9, self.hparams.beta2)
            )

    ds = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
    trainer = L.Trainer(
        max_steps=8,
        logger=L.loggers.CSVLogger(str(tmp_path)),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        accelerator="cpu",
    )
    trainer.fit(Tiny(), torch.utils.data.DataLoader(ds, batch_size=4))
    csv = next(tmp_path.rglob("metrics.csv"))
    cfg = _loaded_config(csv)
    assert cfg.fw == rc.LIGHTNING
    assert cfg.get("lr") == 0.02 and cfg.get("beta2") == 0.99 and cfg.get("n_layer") == 3
    assert "hparams.yaml" in cfg.lr.source
    run = with_config(
        make_run(train__loss=(np.arange(100), np.ones(100))),
        lr=0.02,
        beta2=0.99,
        framework=rc.LIGHTNING,
    )
    t = text_of(suggest([finding("grad-spike", Severity.WARNING, 50)], {"r": run}))
    assert "Trainer(gradient_clip_val=1.0)" in t and "betas=(0.9, 0.95)" in t
    assert "max_grad_norm" not in t and "--clip-grad" not in t


def test_stabdiag_train_config_and_injected_events(tmp_path: Path) -> None:
    """config.json + run.json of a stabdiag train run: the injected bad batch is named as such
    and gets no fix of its own; clip 1.0 and beta2 0.95 already set are not advised again."""
    d = tmp_path / "run"
    d.mkdir()
    (d / "config.json").write_text(
        json.dumps(
            {
                "lr": 3e-3,
                "beta2": 0.95,
                "grad_clip": 1.0,
                "warmup_steps": 20,
                "decay": "cosine",
                "steps": 200,
                "precision": "fp32",
                "n_layer": 2,
                "norm_placement": "pre",
                "qk_norm": False,
            }
        )
    )
    (d / "run.json").write_text(
        json.dumps(
            {
                "stabdiag_version": "0",
                "precision": "fp32",
                "injected": [
                    {
                        "kind": "bad_batch",
                        "step": 120,
                        "last_step": 120,
                        "params": {"mode": "random"},
                    }
                ],
            }
        )
    )
    steps = np.arange(200)
    loss = 5 - steps / 100
    loss[120:123] = [9.0, 7.0, 4.0]
    rows = ["step,train/loss,train/grad_norm,train/lr"] + [
        f"{s},{v},{0.5 + 0.01 * (s % 7)},0.003" for s, v in zip(steps, loss, strict=True)
    ]
    (d / "metrics.csv").write_text("\n".join(rows) + "\n")
    cfg = _loaded_config(d)
    assert cfg.fw == rc.STABDIAG and cfg.get("clip") == 1.0 and cfg.get("schedule") == "cosine"
    assert cfg.get("total_steps") == 200 and cfg.get("injected")[0]["kind"] == "bad_batch"
    rep = diagnose([d], jobs=1)
    (summary,) = rep.runs
    assert summary.diagnosis.cause == "injected"
    assert "bad batch you injected at step 120" in summary.diagnosis.statement
    t = text_of(rep.remedies)
    assert "beta2" not in t and "clip the global grad norm at" not in t
    assert len([r for r in rep.remedies]) <= MAX_PER_RUN


def test_generic_config_json_beside_jsonl_with_key_spellings(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": i, "loss": 3 - i / 50}) + "\n" for i in range(50))
    )
    (tmp_path / "args.json").write_text(
        json.dumps(
            {
                "optimizer": {
                    "type": "AdamW",
                    "params": {"lr": 6e-4, "betas": [0.9, 0.98], "weight_decay": 0.1},
                },
                "clip_grad": 0.5,
                "warmup_iters": 100,
                "max_iters": 5000,
                "bf16": True,
            }
        )
    )
    cfg = _loaded_config(tmp_path / "metrics.jsonl")
    assert cfg.get("lr") == 6e-4 and cfg.get("beta2") == 0.98 and cfg.get("clip") == 0.5
    assert (
        cfg.get("warmup_steps") == 100
        and cfg.get("total_steps") == 5000
        and cfg.get("precision") == "bf16"
    )
    assert cfg.get("optimizer") == "AdamW" and "args.json: optimizer.params.lr" in cfg.lr.source


def test_wandb_config_yaml_and_mlflow_params(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "config.yaml").write_text(
        "wandb_version: 1\nlearning_rate:\n  desc: null\n  value: 0.001\n"
        "max_grad_norm:\n  desc: null\n  value: 0.3\n"
        "per_device_train_batch_size:\n  desc: null\n  value: 8\n"
    )
    cfg = configs.for_run(tmp_path / "run-x.wandb", "wandb-offline", {})
    assert cfg.get("lr") == 0.001 and cfg.get("clip") == 0.3 and cfg.fw == rc.HF
    params = tmp_path / "ml" / "params"
    params.mkdir(parents=True)
    (params / "opt_learning_rate").write_text("0.002")
    (params / "opt_clipnorm").write_text("5.0")
    cfg = configs.for_run(tmp_path / "ml", "mlflow", {})
    assert cfg.get("lr") == 0.002 and cfg.get("clip") == 5.0


def test_never_opens_a_pickle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """training_args.bin beside trainer_state.json is never opened (it is a pickle)."""
    import builtins
    import io

    (tmp_path / "trainer_state.json").write_text(
        json.dumps(
            {"log_history": [{"loss": 1.0, "step": 1}, {"loss": 0.9, "step": 2}], "max_steps": 2}
        )
    )
    (tmp_path / "training_args.bin").write_bytes(b"\x80\x04not opened")
    real_open = builtins.open
    opened: list[str] = []

    def guarded(file, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        opened.append(str(file))
        if str(file).endswith(".bin"):
            raise AssertionError(f"opened {file}")
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", guarded)
    monkeypatch.setattr(io, "open", guarded)
    cfg = _loaded_config(tmp_path)
    assert cfg.get("total_steps") == 2 and cfg.fw == rc.HF
    assert any(o.endswith("trainer_state.json") for o in opened)  # the guard saw the reads


@pytest.mark.skipif(not REAL.is_dir(), reason="needs ../shared/real_logs")
def test_megatron_and_deepspeed_argument_dumps_in_real_logs() -> None:
    meg = _loaded_config(
        REAL / "megatron_bigscience_gpt2" / "meg_gpt2_base_n16_dp1_tp4_pp16-1809577.out"
    )
    assert meg.fw == rc.MEGATRON and meg.get("lr") == 1.5e-4 and meg.get("clip") == 1.0
    assert (
        meg.get("precision") == "fp16"
        and meg.get("n_layer") == 64
        and meg.get("warmup_steps") == 10
    )
    tok = _loaded_config(next((REAL / "megads_gpt3_125m_tokendrop").glob("*.log")))
    assert tok.get("warmup_other") == "3.8e+08 tokens" and tok.get("warmup_steps") is None
    hf = _loaded_config(next((REAL / "hf_deepspeed_bigscience").glob("*.out")))
    assert (
        hf.fw == rc.HF
        and hf.get("lr") == 5e-5
        and hf.get("warmup_steps") == 8
        and hf.get("precision") == "fp16"
    )


# --------------------------------------------------------------------------- the rules


def test_never_advise_what_the_run_already_does() -> None:
    steps = np.arange(1000)
    g = np.r_[np.random.default_rng(0).lognormal(0, 0.1, 500), np.geomspace(1, 1e8, 500)]
    run = with_config(
        make_run(train__loss=(steps, np.ones(1000)), train__grad_norm=(steps, g)),
        learning_rate=0.03,
        max_grad_norm=1.0,
        adam_beta2=0.95,
        bf16=True,
        warmup_steps=50,
        max_steps=1000,
        framework=rc.HF,
    )
    fs = [
        finding("grad-explosion", Severity.ERROR, 500),
        finding("nonfinite", Severity.ERROR, 700),
        finding("loss-spike", Severity.ERROR, 600, recovered=False),
    ]
    rems = suggest(fs, {"r": run})
    changes = [r.change for r in rems]
    assert "beta2" not in changes and "precision" not in changes
    assert "warmup" not in changes  # the events came after the 50-step warm-up ended
    clip = next(r for r in rems if r.change == "clip")
    assert clip.title == "Keep the gradient clip at 1" and "keep max_grad_norm=1" in clip.actions[0]
    assert "6.39e+08" not in text_of(rems) and "e+0" not in clip.actions[0]


def test_no_contradictions_one_per_kind_at_most_six() -> None:
    steps = np.arange(2000)
    run = make_run(train__loss=(steps, np.ones(2000)), train__lr=(steps, np.full(2000, 1e-3)))
    fs = [
        finding("loss-spike", Severity.WARNING, 300, recovered=True, recovery_steps=3),
        finding("loss-spike", Severity.ERROR, 1332, recovered=False),
        finding("nonfinite", Severity.ERROR, 1400),
        finding("divergence", Severity.ERROR, 1350),
        finding("grad-explosion", Severity.ERROR, 1330),
        finding("fp16-overflow", Severity.ERROR, 1300),
        finding("attention-logit-growth", Severity.ERROR, 1200),
        finding("output-logit-drift", Severity.WARNING, 900),
        finding("grad-spike", Severity.WARNING, 800),
    ]
    rems = suggest(fs, {"r": run})
    assert len(rems) <= MAX_PER_RUN
    changes = [r.change for r in rems]
    assert len(changes) == len(set(changes))
    t = text_of(rems)
    assert not ("no rewind needed" in t and "restart from a checkpoint" in t)
    assert sum("lower the peak LR" in a for r in rems for a in r.actions) <= 1
    assert all(r.watch and r.references for r in rems)


def test_lr_cut_relative_to_configured_peak_and_keyed_to_worst_event() -> None:
    steps = np.arange(300)
    run = with_config(
        make_run(train__loss=(steps, np.ones(300)), train__lr=(steps, np.full(300, 0.3))),
        lr=0.3,
        warmup_steps=0,
        steps=300,
        framework=rc.STABDIAG,
    )
    rems = suggest(
        [
            finding("nonfinite", Severity.ERROR, 30),
            finding("loss-spike", Severity.WARNING, 3, recovered=True),
        ],
        {"r": run},
    )
    lr = [a for r in rems for a in r.actions if "lower the peak LR" in a]
    assert lr == [
        "lower the peak LR to 0.03, 10x below the configured peak 0.3 (the nonfinite at step 30): "
        "--set lr=0.03"
    ]
    warm = next(r for r in rems if r.change == "warmup")
    assert "15 steps (5% of the 300 steps configured in config.json: steps)" in warm.actions[0]
    assert "steps logged" not in warm.actions[0]


def test_warmup_not_advised_for_a_mid_run_lr_spike() -> None:
    steps = np.arange(400)
    lr = np.full(400, 1e-3)
    lr[:40] = np.linspace(1e-5, 1e-3, 40)
    lr[200:205] = 1e-2
    run = with_config(
        make_run(train__loss=(steps, np.ones(400)), train__lr=(steps, lr)), warmup_steps=40
    )
    fs = [
        finding(
            "lr-schedule",
            Severity.WARNING,
            199,
            issue="lr_jump",
            factor=10.0,
            step=200,
            trouble="loss-spike",
            trouble_step=201,
        ),
        finding("loss-spike", Severity.WARNING, 201, recovered=True, recovery_steps=5),
    ]
    rems = suggest(fs, {"r": run})
    assert "warmup" not in [r.change for r in rems]
    assert diagnose_run(fs, run).cause == "lr-jump"


def test_framework_specific_advice_only_for_that_framework() -> None:
    steps = np.arange(100)
    base = make_run(train__loss=(steps, np.ones(100)), train__grad_norm=(steps, np.full(100, 0.5)))
    fs = [finding("grad-spike", Severity.WARNING, 50)]
    meg = text_of(suggest(fs, {"r": with_config(base, framework=rc.MEGATRON)}))
    assert "--clip-grad 0.5" in meg and "--adam-beta2 0.95" in meg and "max_grad_norm" not in meg
    ds = text_of(suggest(fs, {"r": with_config(base, framework=rc.DEEPSPEED)}))
    assert '\\"gradient_clipping\\": 0.5' in ds
    nan = [finding("nonfinite", Severity.ERROR, 0)]
    assert "logging_nan_inf_filter" not in text_of(
        suggest(nan, {"r": with_config(base, framework=rc.MEGATRON)})
    )


def test_best_checkpoint_by_the_runs_own_metric() -> None:
    steps = np.array([1000, 2000, 3000, 4000, 5000])
    run = make_run(
        **{"val__loss": (steps, np.array([0.32, 0.36, 0.39, 0.41, 0.42]))},
        eval_wer=(steps, np.array([0.79, 0.75, 0.743, 0.745, 0.744])),
    )
    run = with_config(run, metric_for_best_model="eval_wer", framework=rc.HF)
    f = finding(
        "divergence", Severity.INFO, 1000, overfitting=True, best_val_step=1000, best_val_loss=0.32
    )
    (r,) = suggest([f], {"r": run})
    assert "step 3000, best by eval_wer (0.743, lower is better)" in r.actions[0]
    assert "load_best_model_at_end=True" in r.actions[0]


@pytest.mark.skipif(not REAL.is_dir(), reason="needs ../shared/real_logs")
def test_whisper_metric_for_best_model_recognised_from_trainer_state() -> None:
    cfg = _loaded_config(REAL / "hf_trainer_state_whisper_fp16")
    assert cfg.get("metric_for_best_model") == "eval_wer"


# --------------------------------------------------------------------------- diagnosis rules


def test_diagnosis_names_deep_post_ln_and_fp16_range_and_unclear() -> None:
    steps = np.arange(300)
    run = with_config(
        make_run(train__loss=(steps, np.ones(300))),
        norm_placement="post",
        n_layer=12,
        warmup_steps=0,
        lr=3e-3,
        steps=300,
        framework=rc.STABDIAG,
    )
    d = diagnose_run([finding("stall", Severity.ERROR, 43)], run)
    assert (
        d.cause == "deep-post-ln" and d.confidence == "high" and "12-layer post-LN" in d.statement
    )
    assert [r.change for r in suggest([finding("stall", Severity.ERROR, 43)], {"r": run})][:2] == [
        "norm",
        "warmup",
    ]
    fp = with_config(make_run(train__loss=(steps, np.ones(300))), fp16=True, framework=rc.HF)
    d = diagnose_run([finding("fp16-overflow", Severity.ERROR, 100)], fp)
    assert d.cause == "fp16-range"
    rems = suggest([finding("fp16-overflow", Severity.ERROR, 100)], {"r": fp})
    assert rems[0].change == "precision" and "bf16=True, fp16=False" in rems[0].actions[0]
    bare = make_run(train__loss=(steps, np.ones(300)))
    d = diagnose_run([finding("loss-spike", Severity.ERROR, 200, recovered=False)], bare)
    assert (
        d.cause == "unclear"
        and d.confidence == "low"
        and "log the grad norm, the LR" in d.statement
    )


def test_early_recovered_spike_is_a_transient_not_a_bad_batch() -> None:
    steps = np.arange(1000)
    run = with_config(make_run(train__loss=(steps, np.ones(1000))), warmup_steps=100, lr=1e-3)
    fs = [finding("loss-spike", Severity.WARNING, 30, recovered=True, recovery_steps=5)]
    assert diagnose_run(fs, run).cause == "early-transient"
    assert [r.change for r in suggest(fs, {"r": run})] == ["recovery"]
    late = [finding("loss-spike", Severity.WARNING, 600, recovered=True, recovery_steps=5)]
    assert diagnose_run(late, run).cause == "bad-batch"


def test_config_command_shows_settings_and_sources(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from stabdiag.cli import app

    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": i, "loss": 1.0}) + "\n" for i in range(5))
    )
    (tmp_path / "hparams.json").write_text(
        json.dumps({"learning_rate": 0.01, "max_grad_norm": 0.5})
    )
    r = CliRunner().invoke(app, ["config", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "configured: LR 0.01, clip 0.5" in r.output and "hparams.json: max_grad_norm" in r.output
    r = CliRunner().invoke(app, ["config", str(tmp_path), "--json"])
    doc = json.loads(r.output)
    assert next(iter(doc.values()))["clip"]["value"] == 0.5
    assert CliRunner().invoke(app, ["config", str(tmp_path / "missing")]).exit_code == 2


def test_lr_cut_during_warmup_is_relative_to_the_lr_it_broke_at() -> None:
    """A run that diverged at step 100 of a 250-step warm-up broke at 0.4, not at its peak 1."""
    steps = np.arange(0, 200)
    run = with_config(
        make_run(train__loss=(steps, np.ones(200)), train__lr=(steps, steps / 250)),
        lr=1.0,
        warmup_iters=250,
        max_iters=5000,
    )
    rems = suggest([finding("divergence", Severity.ERROR, 100, rule="runaway")], {"r": run})
    lr = next(a for r in rems for a in r.actions if "lower the peak LR" in a)
    assert lr.startswith("lower the peak LR to 0.04, 10x below the 0.4 it broke at during warm-up")


def test_hf_checkpoint_copy_reads_the_output_dirs_text_summaries(tmp_path: Path) -> None:
    """trainer_state.json read from checkpoint-N/ still finds args/text_summary under output_dir/runs/."""
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    out = tmp_path / "out"
    w = SummaryWriter(str(out / "runs" / "Dec01"))
    w.add_text(
        "args",
        json.dumps(
            {
                "learning_rate": 0.03,
                "warmup_steps": 0,
                "max_grad_norm": 1.0,
                "adam_beta2": 0.95,
                "bf16": True,
                "fp16": False,
                "lr_scheduler_type": "constant",
            }
        ),
    )
    w.add_scalar("train/loss", 1.0, 1)
    w.close()
    (out / "checkpoint-5").mkdir(parents=True)
    (out / "checkpoint-5" / "trainer_state.json").write_text(
        json.dumps({"global_step": 5, "max_steps": 5, "log_history": [{"loss": 1.0, "step": 1}]})
    )
    cfg = _loaded_config(out)
    assert (
        cfg.line().startswith("LR 0.03 constant, no warm-up, clip 1, β2 0.95")
        and cfg.get("precision") == "bf16"
    )
