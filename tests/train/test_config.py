from __future__ import annotations

import subprocess
import sys

import pytest

from stabdiag.errors import TrainError
from stabdiag.train.config import PRESETS, RECIPES, TrainConfig, resolve


def test_unknown_override_key_suggests_the_closest():
    with pytest.raises(TrainError, match="unknown config key 'lrr'; did you mean 'lr'"):
        resolve("tiny", "stable", overrides=["lrr=1e-3"])


def test_override_types_are_checked():
    cfg = resolve(
        "tiny", "stable", overrides=["lr=1e-2", "qk_norm=true", "steps=1e3", "norm=rmsnorm"]
    )
    assert (cfg.lr, cfg.qk_norm, cfg.steps, cfg.norm) == (1e-2, True, 1000, "rmsnorm")
    with pytest.raises(TrainError, match="steps expects int"):
        resolve(overrides=["steps=ten"])
    with pytest.raises(TrainError, match="precision must be one of fp32, bf16, fp16"):
        resolve(overrides=["precision=fp8"])
    with pytest.raises(TrainError, match="expected key=value"):
        resolve(overrides=["lr"])


def test_inject_accumulates_and_is_validated():
    cfg = resolve(overrides=["inject=bad_batch@5", "inject=lr_spike@7:factor=3,steps=2"])
    assert cfg.inject == ("bad_batch@5", "lr_spike@7:factor=3,steps=2")
    with pytest.raises(TrainError, match="unknown parameter 'facter'"):
        resolve(overrides=["inject=lr_spike@7:facter=3"])
    with pytest.raises(TrainError, match="expected KIND@STEP"):
        resolve(overrides=["inject=meteor@3"])


def test_toml_config_file(tmp_path):
    path = tmp_path / "stab.toml"
    path.write_text('[train]\nlr = 0.01\nqk_norm = true\ninject = ["bad_batch@3"]\n')
    cfg = resolve("tiny", "stable", config_file=path, overrides=["lr=0.02"])
    assert (cfg.lr, cfg.qk_norm, cfg.inject) == (0.02, True, ("bad_batch@3",))
    path.write_text("lr = 'fast'\n")
    with pytest.raises(TrainError, match="lr expects float"):
        resolve(config_file=path)
    path.write_text("lr = [\n")
    with pytest.raises(TrainError, match="invalid TOML"):
        resolve(config_file=path)


def test_every_preset_and_recipe_resolves():
    for preset in PRESETS:
        for recipe in RECIPES:
            assert isinstance(resolve(preset, recipe), TrainConfig)
    assert resolve("tiny", "stable").warmup_steps == resolve("tiny").steps // 10
    assert resolve("tiny", "stable", overrides=["steps=50"]).warmup_steps == 5
    assert resolve("tiny", "stable", overrides=["steps=50", "warmup_steps=7"]).warmup_steps == 7
    assert resolve("gpu", "stable", overrides=["device=cpu"]).precision == "fp32"
    with pytest.raises(TrainError, match="unknown preset 'tiney'; did you mean 'tiny'"):
        resolve("tiney")


def test_invariants_are_checked():
    with pytest.raises(TrainError, match="divisible"):
        TrainConfig(n_embd=30, n_head=4)


def test_config_and_package_import_without_torch():
    code = (
        "import sys; import stabdiag.train, stabdiag.train.config; "
        "stabdiag.train.resolve('tiny'); assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_torch_floor_matches_pyproject():
    import re
    from pathlib import Path

    from stabdiag.errors import TrainError as Err
    from stabdiag.train.loop import TORCH_FLOOR, check_torch_version

    floor = ".".join(map(str, TORCH_FLOOR))
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert re.search(rf'^train = \[[^\]]*"torch>={re.escape(floor)}"', pyproject, re.M)
    check_torch_version(floor + ".0+cpu")
    with pytest.raises(Err, match=rf"needs torch>={re.escape(floor)}, found 2\.5\.1"):
        check_torch_version("2.5.1")
