"""The renderer registry (stabdiag.render): one OutputFormat enum, one call signature, one table
from (subject, format) to renderer; the CLI and the library print the same bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from stabdiag.cli import app
from stabdiag.errors import ConfigError
from stabdiag.policy import Policy
from stabdiag.render import (
    RENDERERS,
    SUBJECTS,
    OutputFormat,
    RenderOptions,
    formats,
    output_format,
    render,
    renderer,
)
from stabdiag.render.terminal import render_terminal

SAMPLE = Path(__file__).resolve().parents[2] / "sample_runs" / "loss_spike.csv"


def sample_report():  # noqa: ANN201 - two warnings (a loss and a grad spike), remedies, skips
    import stabdiag

    return stabdiag.analyze(SAMPLE, policy=Policy())


def test_every_subject_has_text_and_json_and_every_report_format_a_renderer() -> None:
    assert set(formats("report")) == set(OutputFormat)
    assert {kind for kind, _ in RENDERERS} == set(SUBJECTS.values())
    for kind in SUBJECTS.values():  # every result a command produces renders for people and CI
        assert {OutputFormat.TEXT, OutputFormat.JSON} <= set(formats(kind)), kind
    assert formats("comparison") == (OutputFormat.TEXT, OutputFormat.JSON)
    assert formats("sweep") == (OutputFormat.TEXT, OutputFormat.JSON, OutputFormat.MARKDOWN)


def test_a_format_a_subject_lacks_is_one_clear_error() -> None:
    assert output_format("junit") is OutputFormat.JUNIT
    with pytest.raises(
        ConfigError,
        match=r"^--format 'xml': expected one of text, json, markdown, html, junit, github$",
    ):
        output_format("xml")
    with pytest.raises(ConfigError, match=r"^--format 'html': expected one of text, json$"):
        renderer("comparison", "html")
    with pytest.raises(TypeError, match="nothing renders a dict"):
        render({}, "text")


def test_text_is_what_a_console_of_that_width_prints() -> None:
    report = sample_report()
    con = Console(record=True, width=90, color_system=None, force_terminal=False)
    with con.capture() as cap:
        con.print(render_terminal(report, max_remedies=2))
    assert render(report, "text", RenderOptions(width=90, max_remedies=2)) == cap.get()
    plain = render(report, OutputFormat.TEXT)
    coloured = render(report, OutputFormat.TEXT, RenderOptions(color_system="standard"))
    assert "\x1b[" not in plain and "\x1b[" in coloured
    assert max(map(len, plain.splitlines())) <= 110  # a file's width


def test_junit_fail_on_comes_from_the_options() -> None:
    report = sample_report()
    failing = render(report, "junit", RenderOptions(fail_on="warning"))
    never = render(report, "junit", RenderOptions(fail_on="never"))
    assert "<failure" in failing and "<failure" not in never
    with pytest.raises(ConfigError, match="--fail-on 'loud'"):
        render(report, "junit", RenderOptions(fail_on="loud"))


@pytest.mark.parametrize("fmt", ["text", "json", "markdown", "github", "junit"])
def test_the_cli_prints_the_registry_s_bytes(fmt: str, tmp_path: Path, monkeypatch) -> None:
    import stabdiag

    monkeypatch.chdir(tmp_path)  # no policy file of the repository applies
    res = CliRunner().invoke(
        app, ["analyze", str(SAMPLE), "-f", fmt, "--fail-on", "never", "-j", "1"]
    )
    assert res.exit_code == 0, res.output
    report = stabdiag.analyze(SAMPLE, fail_on="never")
    expected = render(report, fmt, RenderOptions(width=120, fail_on="never", generated="X"))
    got = res.stdout
    if fmt == "markdown":  # the CLI stamps the time; everything else is the same
        got = "\n".join(ln for ln in got.splitlines() if "Generated" not in ln and "UTC" not in ln)
        expected = "\n".join(
            ln for ln in expected.splitlines() if "Generated" not in ln and " X" not in ln
        )
    if fmt == "junit":  # the timestamp attribute
        import re

        got, expected = (re.sub(r'timestamp="[^"]*"', "", t) for t in (got, expected))
    if fmt == "json":
        got, expected = json.loads(got), json.loads(expected)
        for doc in (got, expected):
            doc.pop("generated", None)
    assert got == expected
