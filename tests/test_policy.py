"""Policy files: parsing, unknown keys, per-run overrides, flags over the file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from stabdiag.errors import ConfigError
from stabdiag.findings import Finding, Severity
from stabdiag.policy import Policy, find_config, load_policy, parse_policy
from stabdiag.report import Report, RunSummary


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


PYPROJECT = """
    [project]
    name = "x"

    [tool.stabdiag]
    select = ["loss-spike", "SD201", "divergence"]
    ignore = ["lr-schedule"]
    fail-on = "warning"

    [tool.stabdiag.map]
    "train/loss" = "my_loss"

    [tool.stabdiag.detectors.loss-spike]
    z_threshold = 8
    window = 128

    [tool.stabdiag.per-run."smoke-*"]
    ignore = ["divergence"]
    fail-on = "never"
"""


def test_pyproject_policy(tmp_path: Path) -> None:
    _write(tmp_path, "pyproject.toml", PYPROJECT)
    (tmp_path / "sub").mkdir()
    assert find_config(tmp_path / "sub") == tmp_path / "pyproject.toml"
    p = load_policy(start=tmp_path / "sub")
    assert p.select == ("loss-spike", "grad-spike", "divergence")  # codes resolve to kinds
    assert p.ignore == ("lr-schedule",) and p.fail_on == "warning"
    assert p.map == {"train/loss": "my_loss"}
    assert p.detectors == {"loss-spike": {"z_threshold": 8.0, "window": 128}}
    cfg = p.detector_configs()["loss-spike"]
    assert cfg.z_threshold == 8.0 and cfg.window == 128
    assert cfg.min_history == type(cfg)().min_history  # untouched fields keep their defaults
    assert p.for_run("smoke-1").fail_on == "never" and p.for_run("main").fail_on == "warning"


def test_stabdiag_toml_wins_and_uses_top_level(tmp_path: Path) -> None:
    _write(tmp_path, "pyproject.toml", PYPROJECT)
    _write(tmp_path, "stabdiag.toml", 'fail-on = "info"\n')
    assert load_policy(start=tmp_path).fail_on == "info"


def test_pyproject_without_section_is_no_policy(tmp_path: Path) -> None:
    _write(tmp_path, "pyproject.toml", "[project]\nname='x'\n")
    assert find_config(tmp_path) is None


@pytest.mark.parametrize(
    "text, match",
    [
        (
            'fail_on = "error"',
            r"unknown key 'fail_on'; known keys: select, ignore, fail-on, map, detectors, per-run",
        ),
        ('fail-on = "fatal"', r"expected one of info, warning, error, never"),
        ('select = ["loss-spikes"]', r"unknown detector 'loss-spikes'"),
        ("[detectors.loss-spike]\nz = 3", r"unknown key 'z'; known keys: .*\bz_threshold\b"),
        ('[detectors.loss-spike]\nwindow = "big"', r"window = 'big': expected int"),
        (
            '[per-run."a*"]\nthresholds = 1',
            r"per-run.'a\*': unknown key 'thresholds'; known keys: select, ignore, fail-on",
        ),
        ("map = 3", r"map: expected a table"),
    ],
)
def test_errors_name_the_key_and_list_known(tmp_path: Path, text: str, match: str) -> None:
    p = _write(tmp_path, "stabdiag.toml", text)
    with pytest.raises(ConfigError, match=match):
        load_policy(p)


def test_bad_toml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected TOML"):
        load_policy(_write(tmp_path, "stabdiag.toml", "select = [\n"))


def test_flags_override_the_file() -> None:
    p = parse_policy(
        {"select": ["stall"], "fail-on": "warning", "map": {"train/loss": "a", "train/lr": "b"}}
    )
    q = p.with_flags(select=["loss-spike"], fail_on="error", map={"train/loss": "c"})
    assert q.select == ("loss-spike",) and q.fail_on == "error"
    assert q.map == {"train/loss": "c", "train/lr": "b"}
    assert p.with_flags().fail_on == "warning"  # no flag: the file's value stays


def _f(run: str, kind: str, sev: Severity) -> Finding:
    return Finding(
        code="SD106",
        kind=kind,
        severity=sev,
        run=run,
        metric="train/loss",
        step_start=1,
        step_end=2,
        message="m",
    )


def test_per_run_overrides_filter_and_gate() -> None:
    p = parse_policy(
        {
            "fail-on": "warning",
            "per-run": {"smoke-*": {"ignore": ["divergence"], "fail-on": "never"}},
        }
    )
    r = Report(
        runs=(
            RunSummary(name="smoke-1", path="", format="csv", steps=None, metrics=()),
            RunSummary(name="main", path="", format="csv", steps=None, metrics=()),
        ),
        findings=(
            _f("smoke-1", "divergence", Severity.ERROR),
            _f("smoke-1", "stall", Severity.WARNING),
            _f("main", "divergence", Severity.WARNING),
        ),
        skipped=(),
        remedies=(),
    )
    applied = p.apply(r)
    assert [(f.run, f.kind) for f in applied.findings] == [
        ("smoke-1", "stall"),
        ("main", "divergence"),
    ]
    assert [f.run for f in p.failing(applied)] == ["main"]


def test_defaults() -> None:
    p = Policy()
    assert p.fail_on == "error" and p.select is None and not p.detector_configs()
