"""Imports run one way: readers and detectors know nothing of reports, the library nothing of its
command line, and the package nothing of the benchmarks.

Every ``import`` in the package is read with ``ast`` (function-level lazy imports included,
relative imports resolved), so a violation is caught whether it runs at import time or not. An
import that runs back up the layers ties a lower layer to a higher one: a reader could no longer
be used without the renderers, and a cycle is one edit away.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "stabdiag"
TESTS = Path(__file__).resolve().parent

# Everything built on the readers' table and the detectors' findings: the analysis, the reports,
# the facade, the command line and the training side.
ABOVE_THE_CORE = (
    "stabdiag.cli",
    "stabdiag.api",
    "stabdiag.render",
    "stabdiag.report",
    "stabdiag.diagnose",
    "stabdiag.diagnosis",
    "stabdiag.remedies",
    "stabdiag.compare",
    "stabdiag.live",
    "stabdiag.train",
    "stabdiag.sweep",
    "stabdiag.verify",
)
# (importing modules, modules they must never import), as dotted-name prefixes.
RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("stabdiag.sources", ABOVE_THE_CORE),
    ("stabdiag.detectors", ABOVE_THE_CORE),
    ("stabdiag.render", ("stabdiag.cli",)),
    ("stabdiag", ("stabbench", "benchmarks")),
)
# The command line is the outermost shell: only its own entry point imports it.
CLI_IMPORTERS = frozenset({"stabdiag.cli", "stabdiag.__main__"})


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def imports_of(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every module the source of ``module`` imports, as absolute dotted names; ``from a import
    b`` counts as both ``a`` and ``a.b`` (``b`` may be a submodule)."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join([*base, *([node.module] if node.module else [])])
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def package_imports() -> dict[str, set[str]]:
    return {
        _module_name(p): imports_of(
            p.read_text(encoding="utf-8"), _module_name(p), is_package=p.name == "__init__.py"
        )
        for p in sorted(PACKAGE.rglob("*.py"))
    }


def violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for module, imported in graph.items():
        forbidden = [f for layer, fs in RULES if _is_under(module, layer) for f in fs]
        if module not in CLI_IMPORTERS:
            forbidden.append("stabdiag.cli")
        out += [
            f"{module} imports {n}" for n in imported if any(_is_under(n, f) for f in forbidden)
        ]
    return sorted(set(out))


def test_no_import_runs_back_up_the_layers() -> None:
    graph = package_imports()
    assert len(graph) > 50 and "stabdiag.sources.csv" in graph  # the whole package was read
    assert violations(graph) == []


def test_the_checker_catches_lazy_relative_and_from_imports() -> None:
    source = (
        "import os\n"
        "from . import aliases\n"
        "from ..render import terminal\n"
        "def f():\n"
        "    import stabdiag.api\n"
        "    from stabdiag import cli\n"
        "    import stabbench.scoring\n"
    )
    probe = "stabdiag.sources.probe"
    imported = imports_of(source, probe)
    assert {"os", "stabdiag.sources.aliases", "stabdiag.render.terminal"} <= imported
    assert violations({probe: imported}) == [
        f"{probe} imports stabbench.scoring",
        f"{probe} imports stabdiag.api",
        f"{probe} imports stabdiag.cli",
        f"{probe} imports stabdiag.render",
        f"{probe} imports stabdiag.render.terminal",
    ]
    # render may use the library below it, never the command line; cli may use everything
    assert violations({"stabdiag.render.x": {"stabdiag.report", "stabdiag.textfmt"}}) == []
    assert violations({"stabdiag.render.x": {"stabdiag.cli"}}) == [
        "stabdiag.render.x imports stabdiag.cli"
    ]
    assert violations({"stabdiag.cli": {"stabdiag.render", "stabdiag.api"}}) == []
    # a package's own relative import resolves against the package itself
    assert imports_of("from .csv import read", "stabdiag.sources", is_package=True) >= {
        "stabdiag.sources.csv"
    }


def test_every_test_helper_module_follows_the_naming_scheme() -> None:
    """Helpers shared by tests are ``<scope>_util.py`` beside the tests that use them (pytest
    imports them by bare name, so the scope keeps the names unique across folders); the only
    other modules are tests, conftests and hand-run scripts listed here."""
    scripts = {"hardening/fuzz_campaign.py"}
    odd = [
        str(p.relative_to(TESTS))
        for p in TESTS.rglob("*.py")
        if not (
            p.name.startswith("test_") or p.name == "conftest.py" or p.name.endswith("_util.py")
        )
        and str(p.relative_to(TESTS)) not in scripts
    ]
    assert odd == []
    names = [p.name for p in TESTS.rglob("*_util.py")]
    assert len(names) == len(set(names)) >= 8


def test_test_modules_have_unique_names() -> None:
    """pytest's default import mode imports each test module by its bare name: two
    ``test_x.py`` in different folders stop the whole collection ("import file mismatch")."""
    names = [p.name for p in TESTS.rglob("test_*.py")]
    twice = sorted({n for n in names if names.count(n) > 1})
    assert twice == []


def test_renderers_write_no_files() -> None:
    """Renderers return text or bytes; only the CLI (and a run's own results directory) writes.
    So nothing in stabdiag/render names the writers of stabdiag.atomic or opens a file to write."""
    writers = ("write_atomic", "write_files", "write_text(", "write_bytes(", 'open("w', "open('w")
    found = [
        f"{p.relative_to(PACKAGE)}: {w}"
        for p in (PACKAGE / "render").rglob("*.py")
        for w in writers
        if w in p.read_text(encoding="utf-8")
    ]
    assert found == []
