"""StabdiagCallback inside a real Lightning Trainer on CPU, with a poisoned batch at a known step."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")

from live_util import Bigram, batch  # noqa: E402

from stabdiag.integrations.lightning import FINDINGS_FILE, StabdiagCallback  # noqa: E402

POISON = 60  # 0-based optimizer step


class Module(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = Bigram()

    def training_step(self, x, batch_idx):
        loss = self.net(x)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-2)


def _fit(tmp_path, callback, steps=100, poison=frozenset({POISON}), log_every=1):
    data = [batch(k, poison) for k in range(steps)]
    loader = torch.utils.data.DataLoader(data, batch_size=None, shuffle=False)
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        callbacks=[callback],
        default_root_dir=tmp_path,
        log_every_n_steps=log_every,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=pl.loggers.CSVLogger(tmp_path),
    )
    trainer.fit(Module(), loader)
    return trainer


def test_warn_reports_the_spike_and_trains_on(tmp_path):
    cb = StabdiagCallback()
    trainer = _fit(tmp_path, cb)
    assert trainer.global_step == 100
    spikes = [f for f in cb.monitor.findings if f.kind == "loss-spike"]
    assert [f.step_start for f in spikes] == [POISON]
    rows = [json.loads(x) for x in (cb._out / FINDINGS_FILE).read_text().splitlines()]
    assert any(r["kind"] == "loss-spike" and r["step_start"] == POISON for r in rows)


def test_stop_at_the_spike_step(tmp_path):
    cb = StabdiagCallback(action="stop", level="warning", feed_every=1)
    trainer = _fit(tmp_path, cb)
    assert cb.monitor.stop_finding.kind == "loss-spike"
    assert trainer.global_step == POISON + 1  # the poisoned step ran, nothing after it


def test_stop_at_the_first_feed_after_the_spike(tmp_path):
    cb = StabdiagCallback(action="stop", level="warning")  # values reach the monitor every 16
    trainer = _fit(tmp_path, cb)
    assert cb.monitor.stop_finding.kind == "loss-spike"
    assert cb.monitor.stop_finding.step_start == POISON
    assert trainer.global_step == 64  # batches 48-63 were fed after batch 63


def test_checkpoint_then_stop_with_batched_host_transfers(tmp_path):
    cb = StabdiagCallback(action="checkpoint", level="warning", feed_every=1)
    trainer = _fit(tmp_path, cb, log_every=10)  # losses reach the host every 10 steps
    assert cb.checkpoint_path is not None and cb.checkpoint_path.is_file()
    # detected at the first logging boundary after the spike: step 69 (the 70th batch)
    assert trainer.global_step == 70
    assert cb.checkpoint_path.name == "stabdiag-step69.ckpt"
    assert [f.step_start for f in cb.monitor.findings if f.kind == "loss-spike"] == [POISON]


def test_healthy_run_is_left_alone(tmp_path):
    cb = StabdiagCallback(action="stop", level="warning")
    trainer = _fit(tmp_path, cb, steps=60, poison=frozenset())
    assert trainer.global_step == 60
    assert not [f for f in cb.monitor.findings if f.severity.label != "info"]
