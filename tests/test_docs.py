"""The documentation site builds with warnings as errors, and its generated pages cover the code.

The reference pages (CLI, detectors, formats, JSON fields, examples) are generated from the code
by docs/_hooks/generate.py during the build; these tests check that what the code has, the pages
show, so a new command, detector, threshold or format cannot be left out of the docs.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _page_text(site: Path, page: str) -> str:
    text = (site / page / "index.html").read_text(encoding="utf-8")
    return html.unescape(re.sub(r"<[^>]+>", " ", text))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        pytest.importorskip(
            module, reason="the docs extra is not installed (pip install -e '.[docs]')"
        )
    out = tmp_path_factory.mktemp("docs") / "site"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_MKDOCS_2_WARNING": "1"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    took = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-4000:]
    print(f"\nmkdocs build --strict: {took:.1f} s")  # shown with -s; the report quotes it
    return out


def test_strict_build_has_every_page(site: Path) -> None:
    for page in ("getting-started", "cli", "api", "json", "detectors", "formats"):
        assert (site / page / "index.html").is_file(), page


def test_cli_page_lists_every_command_and_option(site: Path) -> None:
    import typer

    from stabdiag.cli import app

    text = _page_text(site, "cli")
    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="stabdiag")
    for name in root.list_commands(ctx):
        cmd = root.get_command(ctx, name)
        if cmd.hidden:
            continue
        assert f"stabdiag {name}" in text, name
        for p in cmd.params:
            if p.param_type_name == "option" and not p.hidden:
                assert p.opts[0] in text, (name, p.opts)


def test_detector_page_has_every_detector_and_threshold(site: Path) -> None:
    import dataclasses

    from stabdiag.detectors import DETECTORS
    from stabdiag.words import plain

    text = _page_text(site, "detectors")
    for d in DETECTORS:
        assert d.code in text and d.kind in text
        assert plain(d.doc.strip()).splitlines()[0] in text  # the explain text itself
        for f in dataclasses.fields(d.config) if d.config else ():
            assert f.name in text, (d.kind, f.name)


def test_formats_page_has_every_format(site: Path) -> None:
    from typer.testing import CliRunner

    from stabdiag.cli import app

    listed = CliRunner().invoke(app, ["formats"])
    assert listed.exit_code == 0, listed.output
    # the first column; a wrapped example's continuation line starts blank
    names = [line.split()[0] for line in listed.stdout.splitlines()[1:] if line[:2].strip()]
    assert len(names) >= 10
    text = _page_text(site, "formats")
    for name in names:
        assert name in text, name


def test_api_page_documents_the_facade(site: Path) -> None:
    text = _page_text(site, "api")
    import stabdiag

    # Every name the package exports (test_api pins that list), not a second copy of it.
    for name in sorted(set(stabdiag.__all__) - {"__version__"}):
        assert re.search(rf"\b{name}\b", text), name
    assert "to_frame" in text and "failing" in text  # members come from the docstrings


def test_examples_are_real_output(site: Path) -> None:
    """The getting-started and JSON pages show what the commands print, made during the build."""
    started = _page_text(site, "getting-started")
    assert "loss-spike" in started and "what to change" in started
    assert "pip install" in started  # the README's set-up commands
    assert "len(report.failing())" in started
    json_page = _page_text(site, "json")
    assert '"schema_version"' in json_page and '"judged_reason"' in json_page


def test_every_public_class_has_a_docstring() -> None:
    """The API pages and `help()` read docstrings; a public class without one documents nothing."""
    import ast

    missing = []
    for path in sorted((ROOT / "stabdiag").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            public = isinstance(node, ast.ClassDef) and not node.name.startswith("_")
            if public and not ast.get_docstring(node):
                missing.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not missing, "public classes without a docstring:\n" + "\n".join(missing)


def test_every_json_field_is_described() -> None:
    """The JSON report page lists each field with its schema description: none may be blank."""
    import json

    schema = json.loads((ROOT / "stabdiag" / "schema" / "report.schema.json").read_text("utf-8"))
    objects = {"report": schema, **schema["$defs"]}
    blank = [
        f"{name}.{key}"
        for name, obj in objects.items()
        for key, spec in obj.get("properties", {}).items()
        if not spec.get("description", "").strip()
    ]
    assert not blank, blank
