"""MkDocs hook: the reference pages are generated from the code at build time, never copied.

A page marks where generated text goes with ``<!-- generated: NAME -->`` on a line of its own.
Each NAME is one function below; an unknown marker fails the build, so a page cannot silently
lose its content. The CLI reference walks the Click command behind the Typer app
(``typer.main.get_command``): Typer ships its own copy of Click, which Click-only doc plugins
do not recognise.
"""

from __future__ import annotations

import functools
import html
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_MARKER = re.compile(r"^<!-- generated: ([a-z0-9-]+) -->$", re.MULTILINE)


def on_pre_build(config) -> None:  # noqa: ANN001 - the MkDocs hook signature
    """A new build (``mkdocs serve`` rebuilds on every change) runs the examples afresh."""
    _examples.cache_clear()


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ANN001
    """Replace every ``<!-- generated: NAME -->`` marker with that generator's Markdown."""

    def expand(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise ValueError(
                f"{page.file.src_uri}: unknown generated block {name!r}; "
                f"known: {', '.join(sorted(GENERATORS))}"
            )
        return GENERATORS[name]().rstrip() + "\n"

    return _MARKER.sub(expand, markdown)


# --- generators -----------------------------------------------------------------------------------


def _cli() -> str:
    """Every command of the app: its help, usage line, arguments and options with defaults."""
    import typer

    from stabdiag.cli import app

    root = typer.main.get_command(app)
    root_ctx = root.context_class(root, info_name="stabdiag")
    out = [
        _md(root.help or ""),
        "",
        _usage(root, root_ctx),
        "",
        _params_table(root, root_ctx),
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    names = root.list_commands(root_ctx)
    commands = [root.get_command(root_ctx, n) for n in names]
    out += [
        f"| [`{n}`](#{n}) | {_cell(_md((c.help or '').split(chr(10) * 2)[0]))} |"
        for n, c in zip(names, commands, strict=True)
        if not c.hidden
    ]
    for name, cmd in zip(names, commands, strict=True):
        if cmd.hidden:
            continue
        ctx = cmd.context_class(cmd, info_name=name, parent=root_ctx)
        out += [
            "",
            f"## `stabdiag {name}` {{ #{name} }}",
            "",
            _md(cmd.help or ""),
            "",
            _usage(cmd, ctx),
            "",
            _params_table(cmd, ctx),
        ]
    return "\n".join(out)


def _usage(cmd, ctx) -> str:  # noqa: ANN001 - Typer's (vendored) Click objects
    return f"```text\n{ctx.command_path} {' '.join(cmd.collect_usage_pieces(ctx))}\n```"


def _params_table(cmd, ctx) -> str:  # noqa: ANN001
    rows = ["| argument or option | default | meaning |", "|---|---|---|"]
    for p in cmd.get_params(ctx):
        if p.hidden:
            continue
        if p.param_type_name == "argument":
            label = f"`{p.metavar or p.name.upper()}`"
            default = "required" if p.required else "optional"
        else:
            names = ", ".join(p.opts) + (
                " / " + ", ".join(p.secondary_opts) if p.secondary_opts else ""
            )
            label = f"`{names}{'' if p.is_flag or not p.metavar else ' ' + p.metavar}`"
            default = _default(p)
        rows.append(f"| {label} | {default} | {_cell(_md(p.help or ''))} |")
    return "\n".join(rows)


def _default(p) -> str:  # noqa: ANN001
    if isinstance(p.show_default, str):
        return _cell(_md(p.show_default))
    if p.required:
        return "required"
    if p.is_flag:
        return "on" if p.default else "off"
    if p.default is None or p.default == () or p.default == []:
        return ""
    return f"`{p.default}`"


def _md(text: str) -> str:
    """Help text as Markdown: ``<...>`` outside code spans is text, not an HTML tag."""
    parts = text.strip().replace("\b\n", "").split("`")
    return "`".join(html.escape(x, quote=False) if i % 2 == 0 else x for i, x in enumerate(parts))


def _detectors() -> str:
    """One section per registered detector: what ``stabdiag explain KIND`` prints."""
    from stabdiag.detectors import DETECTORS
    from stabdiag.detectors.explain import policy_table, thresholds
    from stabdiag.words import plain  # as `stabdiag explain` prints it

    out = ["| code | kind | checks |", "|---|---|---|"]
    out += [f"| {d.code} | [`{d.kind}`](#{d.kind}) | {_cell(d.summary)} |" for d in DETECTORS]
    for d in DETECTORS:
        out += [
            "",
            f"## `{d.kind}` ({d.code}) {{ #{d.kind} }}",
            "",
            _cell(d.summary),
            "",
            "```text",
            plain(d.doc.strip()),
            "```",
            "",
        ]
        rows = thresholds(d)
        if rows:
            out += [
                f"Thresholds, set under `{policy_table(d)}` in a policy file:",
                "",
                "| threshold | default | meaning |",
                "|---|---|---|",
            ]
            out += [f"| `{t.name}` | `{t.default!r}` | {_cell(t.help)} |" for t in rows]
        else:
            out.append("This check has no threshold to set.")
    return "\n".join(out)


def _formats() -> str:
    """The reader registry as `stabdiag formats` lists it, with the family a forced
    ``--input-format`` reads."""
    from stabdiag.sources.registry import READERS

    out = [
        "| format | example paths | with `--input-format` it, a folder walk reads |",
        "|---|---|---|",
    ]
    for r in READERS:
        fam = ", ".join(f"`{f}`" for f in sorted(r.family))
        out.append(f"| `{r.name}` | {_cell(r.example, code=True)} | {fam} |")
    return "\n".join(out)


def _json_fields() -> str:
    """Every object of the JSON report and its fields, from the JSON Schema the package ships."""
    schema = json.loads((ROOT / "stabdiag" / "schema" / "report.schema.json").read_text())
    out = [_object_table("report (top level)", schema)]
    for name, sub in schema.get("$defs", {}).items():
        if sub.get("type") == "object":
            out.append(_object_table(f"`{name}`", sub))
        elif "enum" in sub:
            out.append(f"### `{name}`\n\none of: " + ", ".join(f"`{v}`" for v in sub["enum"]))
    return "\n\n".join(out)


def _object_table(title: str, obj: dict) -> str:
    required = set(obj.get("required", ()))
    rows = [f"### {title}", "", "| field | type | always there | meaning |", "|---|---|---|---|"]
    for key, spec in obj.get("properties", {}).items():
        rows.append(
            f"| `{key}` | {_type(spec)} | {'yes' if key in required else 'no'} | "
            f"{_cell(spec.get('description', ''))} |"
        )
    return "\n".join(rows)


def _type(spec: dict) -> str:
    if "$ref" in spec:
        return f"`{spec['$ref'].rsplit('/', 1)[-1]}`"
    if "const" in spec:
        return f"`{json.dumps(spec['const'])}`"
    if "enum" in spec:
        return " / ".join(f"`{json.dumps(v)}`" for v in spec["enum"])
    if "oneOf" in spec or "anyOf" in spec:
        return " or ".join(_type(s) for s in spec.get("oneOf", spec.get("anyOf")))
    kind = spec.get("type", "any")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind == "array" and "items" in spec:
        return f"array of {_type(spec['items'])}"
    return kind


def _readme_setup() -> str:
    """The README's set-up section as it stands (its two commands), so the two never drift."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"^## Set up\n(.*?)(?=^## )", text, re.MULTILINE | re.DOTALL)
    if m is None:
        raise ValueError("README.md has no '## Set up' section for the getting-started page")
    # The README's pointer to these pages has no place in them.
    return "\n\n".join(p for p in m.group(1).strip().split("\n\n") if "mkdocs serve" not in p)


# --- examples: real output, made during the build ----------------------------------------------

_LOSS_SPIKE = "sample_runs/loss_spike.csv"

# One child process makes every example (one import of pandas and matplotlib, not three): the two
# commands through the CLI app, and the notebook one statement at a time, keeping what Jupyter
# would show for each expression: its HTML view when it has one (a Report, a DataFrame), else its
# repr. Its working directory is the repository root, as in the README.
_EXAMPLES_DRIVER = """
import ast, json, sys
from typer.testing import CliRunner
from stabdiag.cli import app

request = json.load(sys.stdin)
out = {}
for key, args in request["commands"].items():
    result = CliRunner().invoke(app, args, env={"COLUMNS": "100"})
    if result.exit_code not in (0, 1):  # 1 = findings at fail-on: still a report
        sys.exit(f"stabdiag {' '.join(args)} exited {result.exit_code}: {result.output[-2000:]}")
    out[key] = result.stdout
code, scope, shown = request["notebook"], {}, []
for stmt in ast.parse(code).body:
    if isinstance(stmt, ast.Expr):
        value = eval(compile(ast.Expression(stmt.value), "<cell>", "eval"), scope)
        html = getattr(value, "_repr_html_", None)
        shown.append({"line": ast.get_source_segment(code, stmt),
                      "html": html() if html else None, "text": repr(value)})
    else:
        exec(compile(ast.Module([stmt], []), "<cell>", "exec"), scope)
out["notebook"] = shown
print(json.dumps(out))
"""


@functools.cache
def _examples() -> dict:
    request = {
        "commands": {
            "first-analysis": ["analyze", _LOSS_SPIKE],
            "json-example": ["analyze", _LOSS_SPIKE, "--format", "json"],
        },
        "notebook": _readme_notebook(),
    }
    env = {
        **os.environ,
        "COLUMNS": "100",
        "NO_COLOR": "1",
        "TERM": "dumb",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "STABDIAG_NO_CACHE": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-c", _EXAMPLES_DRIVER],
        cwd=ROOT,
        env=env,
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the docs examples failed: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def _readme_notebook() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(
        r"^### From Python \(a notebook\)\n+```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL
    )
    if m is None:
        raise ValueError("README.md has no python block under '### From Python (a notebook)'")
    return m.group(1)


def _first_analysis() -> str:
    """The terminal report of the bundled loss-spike sample."""
    shown = _examples()["first-analysis"]
    return f"```console\n$ stabdiag analyze {_LOSS_SPIKE}\n{shown.rstrip()}\n```"


def _json_example() -> str:
    """The JSON report of the same sample."""
    return f"```json\n{_examples()['json-example'].rstrip()}\n```"


def _notebook() -> str:
    """The README's notebook example and what each of its expression lines shows."""
    out = ["```python", _readme_notebook().rstrip(), "```"]
    for item in _examples()["notebook"]:
        out += ["", f"`{item['line'].split('#')[0].strip()}` shows:", ""]
        if item["html"]:
            out += ['<div class="stabdiag-output" markdown="0">', item["html"], "</div>"]
        else:
            out += ["```text", item["text"], "```"]
    return "\n".join(out)


def _cell(text: str, code: bool = False) -> str:
    """Text safe inside one Markdown table cell (no pipes, no line breaks); ``code`` sets it as
    code, HTML-escaped, since a pipe cannot be escaped inside a Markdown code span."""
    text = " ".join(text.split())
    if code:
        return "<code>" + html.escape(text).replace("|", "&#124;") + "</code>"
    return text.replace("|", "\\|")


GENERATORS: dict[str, Callable[[], str]] = {
    "cli": _cli,
    "detectors": _detectors,
    "formats": _formats,
    "json-example": _json_example,
    "json-fields": _json_fields,
    "readme-setup": _readme_setup,
    "first-analysis": _first_analysis,
    "notebook": _notebook,
}
