"""`--help` of every command speaks the user's language (issue 15 item 2).

No Python types as value labels, no `{paths}...` usage, help text shown as written (rich markup
must not eat `[default: ...]` or `[tool.stabdiag]`), defaults shown, no doubled spaces.
"""

from __future__ import annotations

import re

import pytest
import typer.main
from rich.text import Text
from typer.testing import CliRunner

from stabdiag.cli import app

runner = CliRunner()
WIDE = {
    "COLUMNS": "400",
    "TERMINAL_WIDTH": "400",
    "NO_COLOR": "1",
}  # one row per option, no wrapping

ROOT = typer.main.get_command(app)
COMMANDS = sorted(ROOT.commands)  # type: ignore[attr-defined]
PYTHON_TYPES = ("<bool>", "<str>", "<int", "<float>", "<path>", "list[", "Path]", "{")


def _help(*argv: str) -> str:
    r = runner.invoke(app, [*argv, "--help"], env=WIDE)
    assert r.exit_code == 0, r.output
    return r.stdout


def _row(out: str, opt: str) -> str:
    """The help row of one option: the line its long name starts, and the lines its help wraps onto."""
    lines = out.splitlines()
    starts = [i for i, line in enumerate(lines) if re.match(rf"^\W*{re.escape(opt)}(\s|,)", line)]
    assert len(starts) == 1, (opt, starts)
    row = [lines[starts[0]]]
    for line in lines[starts[0] + 1 :]:
        if not re.match(r"^│\s{8,}\S", line):  # a new option's row, or the panel's end
            break
        row.append(line)
    return re.sub(r"[│\s]+", " ", " ".join(row))


def test_every_command_is_covered() -> None:
    assert {"analyze", "train", "sweep", "verify", "watch", "compare", "plot"} <= set(COMMANDS)


@pytest.mark.parametrize(
    "argv", [(), *((c,) for c in COMMANDS)], ids=lambda a: " ".join(a) or "root"
)
def test_help_has_no_python_types(argv: tuple[str, ...]) -> None:
    out = _help(*argv)
    for bad in PYTHON_TYPES:
        assert bad not in out, (argv, bad)
    usage = next(line for line in out.splitlines() if "Usage:" in line)
    cmd = ROOT.commands[argv[0]] if argv else ROOT  # type: ignore[attr-defined]
    for p in cmd.params:
        if p.param_type_name == "argument":
            label = p.metavar
            assert label and label == label.upper(), (argv, p.name)  # PATH..., RUN, KIND
            assert label in usage, (argv, usage)


@pytest.mark.parametrize("name", COMMANDS)
def test_help_text_is_shown_as_written_with_defaults(name: str) -> None:
    out = _help(name)
    flat = re.sub(r"\s+", " ", out)
    cmd = ROOT.commands[name]  # type: ignore[attr-defined]
    for p in cmd.params:
        text = Text.from_markup(p.help or "").plain
        # a doubled space inside a sentence is a stray (e.g. left behind by eaten markup)
        assert not re.search(r"\S {2,}\S", text), (name, p.name, text)
        # every word of the help reaches the screen: markup did not eat a [bracketed] part
        assert re.sub(r"\s+", " ", text) in flat, (name, p.name, text)
        if p.param_type_name != "option":
            continue
        row = _row(out, next(o for o in p.opts if o.startswith("--")))
        if p.is_flag and not p.secondary_opts:
            assert "[default" not in row  # a plain flag is off unless given: nothing to show
        elif p.default is not None and p.show_default is not False:
            assert "[default: " in row, (name, p.opts)  # Typer shows it
        elif p.show_default is False:
            assert "[default: " in row, (name, p.opts)  # hidden: the help says it in words
        if not p.is_flag:
            assert p.metavar, (name, p.opts)  # FILE, LEVEL, N: never a Python type
    for line in (cmd.help or "").splitlines():
        assert not re.search(r"\S {2,}\S", line.strip()), (name, line)


def test_help_details_users_asked_for() -> None:
    assert "[default: error" in _row(_help("analyze"), "--fail-on")
    assert "[default: error" in _row(_help("watch"), "--fail-on")
    assert "pyproject.toml [tool.stabdiag]]" in _row(_help("analyze"), "--config")
    train = _help("train")
    assert "pip install 'stabdiag[train]'" in train
    assert "--inject bad_batch@50 --inject " in _row(train, "--inject")
    assert "Usage: stabdiag analyze [OPTIONS] PATH..." in _help("analyze")
    assert "Usage: stabdiag explain [OPTIONS] [KIND]" in _help("explain")
    root = _help()
    assert re.search(r"--version\s+Print the version", root)  # a flag: no value label
