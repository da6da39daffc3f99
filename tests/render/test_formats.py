"""Renderer tests: golden files for human formats, parse-back for machine formats."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from importlib import resources

import jsonschema
import pytest
from render_util import NASTY, make_report
from rich.console import Console

from stabdiag.findings import Severity
from stabdiag.render import OutputFormat
from stabdiag.render.github import command, escape_data, escape_property, render_github
from stabdiag.render.html import render_html
from stabdiag.render.json import render_json
from stabdiag.render.junit import render_junit
from stabdiag.render.markdown import md, render_markdown
from stabdiag.render.terminal import render_terminal
from stabdiag.report import Report

NOW = "2024-05-01T12:00:00Z"


# --- golden files ------------------------------------------------------------------------------


def test_markdown_golden(report: Report, golden) -> None:
    golden(
        "report.md",
        render_markdown(
            report, images={"gpt-small/seed:1": "plots/gpt-small_seed_1.png"}, generated=NOW
        ),
    )


def test_html_golden(report: Report, golden) -> None:
    golden("report.html", render_html(report, generated=NOW))


def test_terminal_golden(report: Report, golden) -> None:
    con = Console(record=True, width=100, color_system=None, force_terminal=False)
    con.print(render_terminal(report))
    golden("report.txt", con.export_text())


# --- escaping ----------------------------------------------------------------------------------


def test_markdown_escapes_log_strings(report: Report) -> None:
    text = render_markdown(report)
    assert "<b>" not in text and "<script>" not in text
    assert "[a](http" not in text and "@team" not in text
    # Every table row keeps its column count: an escaped "|" does not split a cell.
    for line in text.splitlines():
        if line.startswith("| ") and NASTY[:4] in line.replace("&lt;", "<"):
            assert len(re.findall(r"(?<!\\)\|", line)) in (7, 5)


@pytest.mark.parametrize(
    "raw", ["- list", "# head", "1. item", "> quote", "a|b", "*em*", "<i>x</i>"]
)
def test_md_neutralises_markup(raw: str) -> None:
    out = md(raw)
    assert not re.match(r"^([-#>]|\d+\.)", out)
    assert "<" not in out and re.search(r"(?<!\\)[|*]", out) is None


def test_html_escapes_everything_and_needs_no_network(report: Report) -> None:
    page = render_html(report)
    assert "<script>" not in page and "<b>run</b>" not in page
    assert "&lt;script&gt;" in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    assert "<link" not in page


def test_html_inlines_plots() -> None:
    pytest.importorskip("matplotlib")
    page = render_html(make_report(), plots=True)
    assert page.count('src="data:image/png;base64,') == 2


# --- JSON against its schema ---------------------------------------------------------------------


def _schema() -> dict:
    return json.loads(
        (resources.files("stabdiag") / "schema/report.schema.json").read_text("utf-8")
    )


def test_json_validates_against_schema(report: Report) -> None:
    schema = _schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    doc = json.loads(render_json(report))
    jsonschema.Draft202012Validator(schema).validate(doc)
    assert doc["findings"][0]["severity"] == "info"
    spike = next(f for f in doc["findings"] if f["run"] == NASTY)
    assert spike["evidence"]["peak"] is None  # NaN became null


def test_schema_rejects_drift(report: Report) -> None:
    doc = json.loads(render_json(report))
    doc["findings"][0]["severity"] = "fatal"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, _schema())


# --- JUnit parse-back ----------------------------------------------------------------------------


def test_junit_parse_back(report: Report) -> None:
    root = ET.fromstring(render_junit(report, fail_on=Severity.ERROR))
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"gpt-small/seed:1", NASTY, "stabdiag.inputs"}
    a = suites["gpt-small/seed:1"]
    cases = {c.get("name").split(" ", 1)[1]: c for c in a.iter("testcase")}
    assert {"loss-spike", "divergence", "nonfinite", "restart"} <= set(cases)
    assert [f.get("type") for f in cases["divergence"].findall("failure")] == ["divergence"]
    assert cases["loss-spike"].find("failure") is None  # warning < error
    assert "recovered" in cases["loss-spike"].find("system-out").text
    assert cases["rank-divergence"].find("skipped").get("message").startswith("not checked")
    assert a.get("failures") == "2"
    assert root.get("errors") == "1"
    b = suites[NASTY]
    assert b.find("testcase").get("classname") == f"stabdiag.{NASTY}"


def test_junit_fail_on_levels(report: Report) -> None:
    warn = ET.fromstring(render_junit(report, fail_on=Severity.WARNING))
    assert sum(len(c.findall("failure")) for c in warn.iter("testcase")) == 5
    never = ET.fromstring(render_junit(report, fail_on=None))
    assert not list(never.iter("failure"))


def test_junit_strips_control_characters() -> None:
    from dataclasses import replace

    r = make_report()
    r = replace(r, findings=(replace(r.findings[-1], message="bad \x00\x1b byte"),))
    ET.fromstring(render_junit(r, fail_on=Severity.INFO))


# --- GitHub workflow commands --------------------------------------------------------------------


def test_github_escaping() -> None:
    assert escape_data("50%\r\nx") == "50%25%0D%0Ax"
    assert escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"
    assert command("error", "m::x", title="t,1:2") == "::error title=t%2C1%3A2::m::x"


def test_github_one_line_per_annotation(report: Report) -> None:
    lines = render_github(report).splitlines()
    assert all(re.match(r"^::(error|warning|notice) title=[^:]*::", ln) for ln in lines)
    levels = [ln.split(" ", 1)[0] for ln in lines]
    assert levels.count("::error") == 2 and levels.count("::notice") == 6
    nasty = next(ln for ln in lines if "spike in evil" in ln)
    assert "%250A%3A%2C" in nasty  # a literal "%0A:," in a run name stays literal
    only_err = render_github(report, min_severity=Severity.ERROR).splitlines()
    assert sum(ln.startswith("::error") for ln in only_err) == 2


# --- every --format value has a renderer ----------------------------------------------------------


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_every_output_format_renders(fmt: OutputFormat, tmp_path) -> None:
    from pathlib import Path

    from typer.testing import CliRunner

    from stabdiag.cli import app

    sample = Path(__file__).resolve().parents[2] / "sample_runs" / "loss_spike.csv"
    out = tmp_path / f"report.{fmt.value}"
    res = CliRunner().invoke(
        app, ["analyze", str(sample), "--format", fmt.value, "-o", str(out), "--fail-on", "never"]
    )
    assert res.exit_code == 0, res.output
    assert out.read_text(encoding="utf-8").strip()
