"""`stabdiag explain` says what every threshold means: each detector Config field has a docstring."""

from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

from stabdiag.cli import app
from stabdiag.detectors import DETECTORS
from stabdiag.detectors.explain import explain_text, field_docs, thresholds


@pytest.mark.parametrize("det", DETECTORS, ids=lambda d: d.kind)
def test_every_config_field_is_described(det) -> None:  # noqa: ANN001
    assert det.config is not None, f"{det.kind}: no Config"
    assert det.config.__doc__ and not det.config.__doc__.startswith("Config("), det.kind
    docs = field_docs(det.config)
    for f in dataclasses.fields(det.config):
        text = docs.get(f.name, "")
        assert len(text.split()) >= 4, f"{det.kind}.{f.name}: no description ({text!r})"


def test_thresholds_carry_name_default_and_meaning() -> None:
    det = next(d for d in DETECTORS if d.kind == "loss-spike")
    rows = {t.name: t for t in thresholds(det)}
    assert rows["z_threshold"].default == 7.0
    assert "OLMo 2" in rows["z_threshold"].help


def test_explain_prints_each_threshold_with_default_and_meaning() -> None:
    r = CliRunner().invoke(app, ["explain", "loss-spike"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    at = lines.index("    z_threshold = 7.0")
    assert lines[at + 1].startswith("        ") and lines[at + 1].strip()  # its meaning follows


def test_explain_text_wraps_to_width() -> None:
    for det in DETECTORS:
        for line in explain_text(det, width=80).split("\nThresholds (set them", 1)[-1].splitlines():
            assert len(line) <= 80 or " " not in line.strip(), (det.kind, line)


@dataclasses.dataclass(frozen=True)
class _Sample:
    a: int = 1
    """The first."""
    b: int = 2  # a comment is not a docstring
    c: int = 3
    """Two
    lines."""


def test_field_docs_reads_attribute_docstrings_only() -> None:
    assert field_docs(_Sample) == {"a": "The first.", "c": "Two\nlines."}

    @dataclasses.dataclass
    class Local:  # not at module level: nothing to read, and no error
        a: int = 1
        """The first."""

    assert field_docs(Local) == {}
