"""Shared fixtures for the trainer tests: tiny, fast configs on one CPU thread."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_overrides(tmp_path):
    """A ~5 s run: 2 layers, 32 wide, 40 steps on 200 KB of stdlib source."""
    return [
        f"out_dir={tmp_path}",
        "n_embd=32",
        "block_size=32",
        "batch_size=8",
        "steps=40",
        "eval_interval=20",
        "log_interval=5",
        "data_max_bytes=200000",
        "warmup_steps=5",
    ]
