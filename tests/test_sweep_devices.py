"""sweep devices: --devices parsing, slots per GPU / CPU cores, and the one-cell-per-slot dispatcher.

Pure functions of device lists and core counts, so multi-GPU scheduling is tested without a GPU.
"""

from __future__ import annotations

import random

import pytest

from stabdiag.errors import ConfigError
from stabdiag.sweep.devices import VISIBLE, Dispatcher, parse_devices, plan_slots, visible_for


def test_parse_devices():
    assert parse_devices("cuda:0,cuda:1", 2) == ("cuda:0", "cuda:1")
    assert parse_devices("cuda", 4) == ("cuda:0", "cuda:1", "cuda:2", "cuda:3")
    assert parse_devices(" CUDA:1 ", 2) == ("cuda:1",)
    assert parse_devices("cuda:0,cuda:0", 1) == ("cuda:0", "cuda:0")  # two cells on one GPU
    assert parse_devices("cpu", 0) == ("cpu",)
    for bad, gpus, match in [
        ("cuda:2", 2, "does not exist"),
        ("cuda", 0, "no CUDA device"),
        ("gpu0", 2, "expected cpu, cuda or cuda:N"),
        ("cpu,cuda:0", 1, "not both"),
        ("", 1, "expected cpu"),
    ]:
        with pytest.raises(ConfigError, match=match):
            parse_devices(bad, gpus)


def test_visible_for_maps_through_the_parents_own_visible_list():
    assert visible_for(1, None) == "1"
    assert visible_for(0, "") == "0"
    assert visible_for(1, "4,6") == "6"  # the parent's cuda:1 is physical GPU 6


def _plan(**kw):
    args = dict(cell_devices={"auto"}, devices=None, visible_gpus=0, cores=8, todo=100)
    return plan_slots(**(args | kw))


def test_every_visible_gpu_gets_one_pinned_slot():
    p = _plan(visible_gpus=4)
    assert [s.device for s in p.slots] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert [dict(s.env)[VISIBLE] for s in p.slots] == ["0", "1", "2", "3"]
    assert all(s.threads == 2 for s in p.slots) and not p.in_process
    assert "one cell per GPU" in p.describe()
    chosen = _plan(visible_gpus=4, devices=("cuda:1", "cuda:3"), parent_visible="2,3,5,7")
    assert [dict(s.env)[VISIBLE] for s in chosen.slots] == ["3", "7"]
    assert len(_plan(visible_gpus=4, jobs=2).slots) == 2  # -j caps the slots
    assert len(_plan(visible_gpus=4, todo=3).slots) == 3  # no idle workers
    one = _plan(visible_gpus=1)
    assert one.in_process and one.slots[0].device == "cuda:0"  # live progress, no pinning
    assert not _plan(visible_gpus=2, devices=("cuda:1",)).in_process  # cuda:1 needs pinning


def test_cpu_slots_share_the_cores_or_take_cpus_per_cell():
    p = _plan(cores=8)
    assert len(p.slots) == 8 and all(s.threads == 1 and s.device == "cpu" for s in p.slots)
    assert [s.threads for s in _plan(cores=8, jobs=2).slots] == [4, 4]
    fixed = _plan(cores=8, cpus_per_cell=2)
    assert len(fixed.slots) == 4 and {s.threads for s in fixed.slots} == {2}
    single = _plan(cores=2, todo=1)
    assert single.in_process and single.slots[0].threads == 2
    # a GPU machine told to use the CPU: device=auto cells must not find the GPU
    hidden = _plan(visible_gpus=2, devices=("cpu",), cores=4)
    assert all(dict(s.env) == {VISIBLE: ""} for s in hidden.slots) and not hidden.in_process
    assert _plan(cell_devices={"cpu"}, visible_gpus=2, cores=1).slots[0].env == ()


def test_devices_that_contradict_the_cells_are_refused():
    with pytest.raises(ConfigError, match="no CUDA device is visible"):
        _plan(cell_devices={"cuda"}, visible_gpus=0)
    with pytest.raises(ConfigError, match="ask for device=cuda"):
        _plan(cell_devices={"cuda"}, visible_gpus=2, devices=("cpu",))
    with pytest.raises(ConfigError, match="ask for device=cpu"):
        _plan(cell_devices={"cpu"}, visible_gpus=2, devices=("cuda:0",))


@pytest.mark.parametrize("slots,cells", [(1, 5), (4, 30), (8, 3), (3, 0)])
def test_dispatcher_keeps_one_cell_per_slot_and_runs_each_cell_once(slots, cells):
    rng = random.Random(slots * 100 + cells)
    d = Dispatcher(slots, list(range(cells)))
    running = dict(d.start())  # slot -> cell
    order = list(running.values())
    assert len(running) == min(slots, cells)
    while running:
        slot = rng.choice(sorted(running))  # cells finish in any order
        del running[slot]
        for s, c in d.finished(slot):
            assert s not in running  # never two cells on one slot (GPU) at a time
            running[s] = c
            order.append(c)
        assert len(running) <= slots
    assert order == list(range(cells)) and d.done  # grid order, every cell once
    with pytest.raises(ValueError):
        d.finished(0)


def test_a_spawned_worker_can_pin_its_gpu_before_torch_is_imported():
    """_slot_init sets CUDA_VISIBLE_DEVICES in the worker; that only works if unpickling the
    worker's functions (importing the sweep runner) does not import torch first."""
    import subprocess
    import sys

    code = (
        "import sys, stabdiag.sweep.runner, stabdiag.sweep.devices, stabdiag.sweep.spec; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
