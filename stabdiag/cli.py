"""Command-line interface: thin commands over the library, and the single error boundary.

Reports go to stdout (or ``--output``); progress, warnings and errors go to stderr. Exit codes:
0 nothing at or above ``--fail-on``, 1 findings at or above it, 2 bad usage or unreadable input.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from stabdiag import __version__
from stabdiag.cli_help import Group
from stabdiag.errors import StabdiagError
from stabdiag.words import count, plural

app = typer.Typer(
    name="stabdiag",
    cls=Group,  # help labels values by meaning (FILE, N), never by Python type (cli_help.py)
    help="Training-stability diagnostics: find loss spikes, gradient explosions, fp16 overflow and "
    "divergence in a run's logs, and say what to change.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

EXIT_OK, EXIT_FINDINGS, EXIT_BAD_INPUT = 0, 1, 2


def _version(value: bool) -> None:
    if value:
        typer.echo(f"stabdiag {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """stabdiag: training-stability diagnostics."""


def _fail(message: str) -> None:
    from rich.markup import escape

    from stabdiag.console import err
    from stabdiag.safetext import printable

    # Messages carry file names and hints like 'stabdiag[train]': never read them as markup, and
    # never let a control character from a file name reach the terminal.
    err.print(
        f"[error]error:[/error] {escape(printable(message))}",
        highlight=False,
        markup=True,
        soft_wrap=True,
    )
    raise typer.Exit(EXIT_BAD_INPUT)


def _warn(message: str) -> None:
    from rich.markup import escape

    from stabdiag.console import err
    from stabdiag.safetext import printable

    err.print(
        f"[warning]warning:[/warning] {escape(printable(message))}", highlight=False, soft_wrap=True
    )


def guarded(fn: Callable[[], Any]) -> Any:
    """The error boundary: user errors become one line on stderr and exit 2, never a traceback."""
    try:
        return fn()
    except typer.Exit:
        raise
    except StabdiagError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _fail("interrupted")
    except Exception as e:  # noqa: BLE001 - the boundary must not leak tracebacks to users
        if os.environ.get("STABDIAG_DEBUG"):
            raise
        _fail(f"internal error: {type(e).__name__}: {e} (set STABDIAG_DEBUG=1 for a traceback)")


def _parse_map(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip() or not raw.strip():
            _fail(f"--map {item!r}: expected CANONICAL=SERIES, e.g. train/loss=my_loss_tag")
        out[name.strip()] = raw.strip()
    return out


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def _image_formats(values: list[str] | None, default: tuple[str, ...]) -> tuple[str, ...]:
    """``--image-format`` values (repeatable, comma-separated), checked; ``default`` when none."""
    fmts = tuple(dict.fromkeys(_split(values) or default))
    bad = [f for f in fmts if f not in ("png", "svg")]
    if bad:
        _fail(f"--image-format {bad[0]!r}: expected png or svg")
    return fmts


def _write(text: str, output: Path | None) -> None:
    if output is None or str(output) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from stabdiag.atomic import write_atomic

    try:
        write_atomic(output, text)
    except OSError as e:
        _fail(f"{output}: cannot write the report ({e.strerror or e})")
    from stabdiag.console import err
    from stabdiag.safetext import printable

    # Said on stderr, as --plots says where its figures went: stdout stays clean for pipes.
    err.print(
        f"wrote the report to {printable(output)}", markup=False, highlight=False, soft_wrap=True
    )


def _refuse_overwriting_inputs(output: Path | None, paths: list[Path]) -> None:
    """``--output`` must never replace a log it reads: an input file, or a log inside an input dir."""
    if output is None or str(output) == "-" or not output.exists():
        return
    from stabdiag.sources import sniff

    target = output.resolve()
    for p in paths:
        root = p.resolve()
        if target == root or (root.is_dir() and root in target.parents and sniff.sniff(target)):
            _fail(
                f"--output {output}: refusing to overwrite an input log; write the report elsewhere"
            )


def _local_run(path: Path | None) -> Path | None:
    """A run is read from local files: a URL (which pathlib folds from gs://b/x to gs:/b/x) is
    one clear line and exit 2, not a 'nothing at gs:/b/x' about a path the user never typed."""
    from stabdiag.errors import remote_url

    url = remote_url(path) if path is not None and not path.exists() else None
    if url:
        _fail(f"remote paths are not supported; download first: {url}")
    return path


def _nothing_read(paths: list[Path], errors: Sequence[str]) -> None:
    """Exit 2 when no run was read. The files that could not be read were just listed, one
    warning each: the last line counts them instead of claiming that no log was there."""
    where = ", ".join(map(str, paths))
    if errors:
        n = len(errors)
        _fail(
            f"no run could be read from {where}: {n} unreadable log{'s' if n > 1 else ''} (listed above)"
        )
    _fail(
        f"no training logs found in {where} (expected TensorBoard event files, trainer_state.json, "
        "metrics.csv, CSV or JSONL; `stabdiag formats` lists every format)"
    )


PathsArg = Annotated[
    list[Path],
    typer.Argument(
        metavar="PATH...",
        help="Log files or directories (searched recursively).",
        show_default=False,
        readable=False,
    ),
]
ReaderOpt = Annotated[
    str | None,
    typer.Option(
        "--input-format",
        "-i",
        metavar="READER",
        help="Force the log reader instead of sniffing (see `stabdiag formats`).",
    ),
]
MapOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--map",
        metavar="CANONICAL=SERIES",
        help="Take a series as a canonical metric: CANONICAL=SERIES, e.g. train/loss=my_loss. Repeatable.",
    ),
]


@app.command()
def analyze(
    paths: PathsArg,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            metavar="FORMAT",
            help="Report format: text, json, markdown, html, junit or github.",
        ),
    ] = "text",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Write the report here (- = stdout). \\[default: stdout]",
        ),
    ] = None,
    fail_on: Annotated[
        str | None,
        typer.Option(
            metavar="LEVEL",
            help="Exit 1 when a finding is at or above: info, warning, error, never. \\[default: error, or the config file's fail-on]",
            show_default=False,
        ),
    ] = None,
    select: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KINDS", help="Only these kinds or codes (comma-separated, repeatable)."
        ),
    ] = None,
    ignore: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KINDS", help="Skip these kinds or codes (comma-separated, repeatable)."
        ),
    ] = None,
    input_format: ReaderOpt = None,
    map_: MapOpt = None,
    max_remedies: Annotated[
        int, typer.Option(metavar="N", help="Remedies shown per run in the text report.")
    ] = 5,
    plots: Annotated[
        Path | None,
        typer.Option(
            "--plots",
            metavar="DIR",
            help="Also write one figure per run into this directory (see --image-format).",
        ),
    ] = None,
    image_format: Annotated[
        list[str] | None,
        typer.Option(
            "--image-format",
            metavar="FORMAT",
            help="Figure formats for --plots: png and/or svg (repeatable). "
            "\\[default: png, which the Markdown and HTML reports show]",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="FILE",
            help="Policy file. \\[default: the nearest stabdiag.toml or pyproject.toml \\[tool.stabdiag]]",
        ),
    ] = None,
    no_cache: Annotated[
        bool,
        typer.Option(
            "--no-cache",
            help="Re-parse every log; do not read or write the parsed-log cache (also STABDIAG_NO_CACHE=1).",
        ),
    ] = False,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            "-j",
            metavar="N",
            help="Worker processes for many runs (1 = none; also STABDIAG_JOBS). \\[default: all CPUs]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Analyze training logs: classify every stability event, rank remedies, exit 0/1/2 for CI."""

    def run() -> None:
        from stabdiag import api
        from stabdiag.console import err, out
        from stabdiag.render import output_format
        from stabdiag.textfmt import parse_fail_on

        if fail_on is not None:
            parse_fail_on(fail_on)
        out_fmt = output_format(fmt)
        if image_format and plots is None:
            _fail("--image-format: only with --plots DIR (the HTML report embeds PNGs itself)")
        # Only what is asked for: an SVG costs half as much again as the PNG the reports show.
        image_fmts = _image_formats(image_format, ("png",))
        # The policy file first, flags on top (issue 6); the library applies it (issue 16).
        pol = api.resolve_policy(
            config,
            select=_split(select),
            ignore=_split(ignore),
            fail_on=fail_on,
            map=_parse_map(map_),
        )
        _refuse_overwriting_inputs(output, paths)
        with (
            err.status("reading logs and detecting", spinner="dots") if err.is_terminal else _null()
        ):
            report = api.analyze(
                paths, policy=pol, jobs=jobs, cache=not no_cache, input_format=input_format
            )
        for e in report.errors:
            _warn(e)
        if not report.runs:
            _nothing_read(paths, report.errors)
        from stabdiag.diagnose import resolve_jobs

        written = []
        if plots is not None:
            from stabdiag.atomic import write_files
            from stabdiag.render.plots import image_files

            with _figure_progress(len(report.runs)) as progress:
                images = image_files(report, image_fmts, jobs=resolve_jobs(jobs), progress=progress)
            written = write_files(plots, images)
            from stabdiag.safetext import printable

            err.print(
                f"wrote {count(len(written), 'plot file')} to {printable(plots)}",
                soft_wrap=True,
                highlight=False,
                markup=False,
            )
        from stabdiag.render import OutputFormat

        # An HTML report without --plots PNGs draws its figures while rendering: a bar for those too.
        pngs = any(p.suffix == ".png" for p in written)
        drawing = len(report.runs) if out_fmt is OutputFormat.HTML and not pngs else 0
        with _figure_progress(drawing) as progress:
            _emit(
                report,
                out_fmt,
                output,
                max_remedies,
                out,
                fail_on=pol.fail_on,
                plot_files=written,
                jobs=resolve_jobs(jobs),
                progress=progress,
            )
        if not report.judged_runs():
            _fail(
                "no run could be judged: no loss series found (use --map train/loss=SERIES; "
                "`stabdiag series PATH` lists what was read)"
            )
        if pol.failing(report):
            raise typer.Exit(EXIT_FINDINGS)

    guarded(run)


def _emit(
    report: Any,
    out_fmt: Any,
    output: Path | None,
    max_remedies: int,
    out: Any,
    *,
    fail_on: str = "error",
    plot_files: list[Path] | None = None,
    jobs: int = 1,
    progress: Callable[[int, int, str], None] | None = None,
) -> None:
    """The report in ``out_fmt`` (the renderer registry, stabdiag.render) to stdout or --output:
    laid out for the terminal it goes to, or plain at the file width."""
    import datetime

    from stabdiag import gcpause
    from stabdiag.render import RenderOptions, render

    to_stdout = output is None or str(output) == "-"
    fit = {"width": out.width, "color_system": out.color_system} if to_stdout else {}
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    with gcpause.paused():  # a report of many runs is many small objects kept to the end
        text = render(
            report,
            out_fmt,
            RenderOptions(
                max_remedies=max_remedies,
                fail_on=fail_on,
                plot_files=tuple(plot_files or ()),
                link_base=None if to_stdout else output.parent,
                generated=now,
                jobs=jobs,
                progress=progress,
                **fit,
            ),
        )
    _write(text, output)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> None:
        return None


class _figure_progress:
    """A rich bar on stderr while figures are drawn, one tick per run (nothing off a terminal);
    entering gives the ``progress(done, total, run)`` callback the plot renderers take. No
    refresh thread (it redraws on each tick), so worker processes can still be forked."""

    def __init__(self, total: int) -> None:
        self.total, self.bar = total, None

    def __enter__(self) -> Callable[[int, int, str], None] | None:
        from stabdiag.console import err

        if not err.is_terminal or self.total == 0:
            return None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.bar = Progress(
            TextColumn("drawing plots"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[run]}"),
            console=err,
            auto_refresh=False,
            transient=True,
        )
        self.bar.start()
        task = self.bar.add_task("plots", total=self.total, run="")
        self.bar.refresh()

        def tick(done: int, total: int, run: str) -> None:
            from stabdiag.safetext import printable

            self.bar.update(
                task, completed=done, total=total, run=printable(run)[:60], refresh=True
            )

        return tick

    def __exit__(self, *a: object) -> None:
        if self.bar is not None:
            self.bar.stop()


@app.command()
def explain(
    kind: Annotated[
        str | None,
        typer.Argument(metavar="KIND", help="A kind (e.g. loss-spike) or code (e.g. SD101)."),
    ] = None,
    list_: Annotated[bool, typer.Option("--list", "-l", help="List every detector.")] = False,
) -> None:
    """Explain what a detector checks, why, how, and its known false positives."""

    def run() -> None:
        from stabdiag.console import out
        from stabdiag.detectors import DETECTORS, by_kind

        if list_ or kind is None:
            for d in DETECTORS:
                out.print(f"[bold]{d.code}[/bold]  {d.kind:<24} {d.summary}", soft_wrap=True)
            return
        try:
            d = by_kind(kind)
        except KeyError:
            _fail(f"unknown kind or code {kind!r}; known: {', '.join(x.kind for x in DETECTORS)}")
        from rich.text import Text

        from stabdiag.detectors.explain import explain_text
        from stabdiag.words import plain

        text = Text(plain(explain_text(d, width=max(60, min(out.width, 100)))))
        text.stylize("bold", 0, len(f"{d.code} {d.kind}"))
        out.print(text, highlight=False, soft_wrap=True)

    guarded(run)


@app.command()
def series(
    paths: PathsArg,
    input_format: ReaderOpt = None,
    map_: MapOpt = None,
) -> None:
    """List every series found per run and the canonical metric it was taken as (and why)."""

    def run() -> None:
        from rich.table import Table
        from rich.text import Text

        from stabdiag import api
        from stabdiag.console import out
        from stabdiag.textfmt import step_span

        loaded = api.load_runs(paths, map=_parse_map(map_), input_format=input_format)
        for e in loaded.errors:
            _warn(e)
        if not loaded.runs:
            _nothing_read(paths, loaded.errors)
        for info in loaded.runs:
            t = Table(
                title=Text(f"{info.name}  ({info.format}: {info.path})"),
                title_justify="left",
                box=None,
                header_style="bold",
            )
            t.add_column("series")
            t.add_column("taken as")
            t.add_column("points", justify="right")
            t.add_column("steps")
            t.add_column("why", style="dim")
            rd = loaded.table.run_data(info.name)
            for raw, metric, why in info.mapping:
                s = rd.series.get(metric)
                n = len(s) if s is not None else 0
                span = step_span(int(s.steps[0]), int(s.steps[-1])) if n else "-"
                t.add_row(Text(raw), Text(metric), str(n), span, Text(why))
            out.print(t)
            out.print()

    guarded(run)


@app.command("config")
def config_cmd(
    paths: PathsArg,
    input_format: ReaderOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the settings as JSON.")] = False,
) -> None:
    """Show what each run was configured to do (LR, warm-up, clip, optimizer, precision, model) and the file each setting was read from."""

    def run() -> None:
        import json

        from rich.table import Table
        from rich.text import Text

        from stabdiag import api
        from stabdiag.console import out

        loaded = api.load_runs(paths, input_format=input_format)  # the policy file's map applies
        for e in loaded.errors:
            _warn(e)
        if not loaded.runs:
            _nothing_read(paths, loaded.errors)
        if as_json:
            doc = {
                i.name: (c.to_dict() if (c := i.meta.get("run_config")) else {})
                for i in loaded.runs
            }
            out.print_json(json.dumps(doc, default=str))
            return
        for info in loaded.runs:
            cfg = info.meta.get("run_config")
            head = Text(f"{info.name}  ({info.format}: {info.path})", style="bold")
            out.print(head)
            if not cfg:
                out.print(Text("  no configuration found beside the log", style="dim"))
                continue
            out.print(Text(f"  configured: {cfg.line()}"))
            t = Table(box=None, header_style="bold", pad_edge=False)
            t.add_column("  setting")
            t.add_column("value")
            t.add_column("read from", style="dim", overflow="fold")
            for name, s in cfg.settings().items():
                t.add_row(f"  {name}", Text(str(s.value)[:80]), Text(s.source))
            out.print(t)
            out.print()

    guarded(run)


@app.command(context_settings={"help_option_names": ["-h", "--help"]})
def train(
    preset: Annotated[
        str,
        typer.Option(
            metavar="NAME",
            help="Model size: tiny (0.1M parameters, ~15 s of CPU time), small (0.8M, ~25 CPU-minutes), gpu (11M, one GPU).",
        ),
    ] = "tiny",
    recipe: Annotated[
        str, typer.Option(metavar="NAME", help="Stabilizer recipe: stable or unstable.")
    ] = "stable",
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", metavar="FILE", help="TOML file of config keys."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            "-s",
            metavar="KEY=VALUE",
            help="Any config key: KEY=VALUE, e.g. --set lr=1e-2 --set qk_norm=true. Repeatable.",
        ),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            metavar="N", help="Training steps. \\[default: the preset's; --show-config prints it]"
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            metavar="LR",
            help="Peak learning rate. \\[default: the recipe's; --show-config prints it]",
        ),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            metavar="PRECISION",
            help="fp32, bf16 or fp16 (dynamic loss scaling). \\[default: the recipe's; --show-config prints it]",
        ),
    ] = None,
    inject: Annotated[
        list[str] | None,
        typer.Option(
            metavar="FAULT",
            help="Fault injection, repeatable: --inject bad_batch@50 --inject lr_spike@40:factor=10,steps=5 --inject grad_scale@30:factor=1e6.",
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            metavar="SOURCE", help="stdlib, synthetic, or a text file. \\[default: stdlib]"
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", metavar="DIR", help="Parent directory of the run directory. \\[default: runs]"
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="Run directory name. \\[default: PRESET-RECIPE]"),
    ] = None,
    device: Annotated[
        str | None, typer.Option(metavar="DEVICE", help="auto, cpu or cuda. \\[default: auto]")
    ] = None,
    guard: Annotated[
        str | None,
        typer.Option(
            metavar="MODE",
            help="In-loop guard: off, warn (report findings), stop (checkpoint and end the run on one), "
            "skip (skip the optimizer step of an outlier loss; one host sync per step). \\[default: off]",
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the run in --out/--name from its last checkpoint.")
    ] = False,
    restart: Annotated[
        bool,
        typer.Option(help="Discard the run already in --out/--name and train it from scratch."),
    ] = False,
    analyze_: Annotated[
        bool, typer.Option("--analyze/--no-analyze", help="Analyze the run when it ends.")
    ] = True,
    fail_on: Annotated[
        str,
        typer.Option(metavar="LEVEL", help="With --analyze: exit 1 at this severity (or never)."),
    ] = "never",
    show_config: Annotated[
        bool, typer.Option("--show-config", help="Print the resolved config and exit.")
    ] = False,
) -> None:
    """Train a small instrumented reference transformer and log every stability signal.

    Writes a run directory (TensorBoard events, metrics.csv, config.json, run.json, checkpoints),
    then analyzes it. Needs the train extra: pip install 'stabdiag\\[train]'.
    """

    def run() -> None:
        import json

        from stabdiag.train.config import resolve

        overrides = list(set_ or [])
        for key, value in (
            ("steps", steps),
            ("lr", lr),
            ("precision", precision),
            ("data", data),
            ("out_dir", out),
            ("run_name", name),
            ("device", device),
            ("guard", guard),
        ):
            if value is not None:
                overrides.append(f"{key}={value}")
        overrides += [f"inject={spec}" for spec in inject or []]
        cfg = resolve(preset, recipe, config, overrides)
        if show_config:
            sys.stdout.write(json.dumps(cfg.to_dict(), indent=2) + "\n")
            return
        _train_and_report(cfg, resume=resume, restart=restart, analyze=analyze_, fail_on=fail_on)

    guarded(run)


@app.command(context_settings={"help_option_names": ["-h", "--help"]})
def branch(
    run_path: Annotated[
        Path,
        typer.Argument(metavar="RUN", callback=_local_run, help="A stabdiag train run directory."),
    ],
    at: Annotated[
        int,
        typer.Option(
            "--at",
            metavar="STEP",
            help="Restart from the newest checkpoint at or before this step.",
        ),
    ],
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            "-s",
            metavar="KEY=VALUE",
            help="A change from that step on: KEY=VALUE (lr, grad_clip, beta2, z_loss, precision, ...). Repeatable.",
        ),
    ] = None,
    skip_batches: Annotated[
        list[str] | None,
        typer.Option(
            "--skip-batches",
            metavar="A:B",
            help="Never train on data batches A:B (inclusive), e.g. the batches of a spike. Repeatable.",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="The branch's run directory name, beside RUN. \\[default: RUN-atSTEP]",
        ),
    ] = None,
    analyze_: Annotated[
        bool, typer.Option("--analyze/--no-analyze", help="Analyze the branch when it ends.")
    ] = True,
    fail_on: Annotated[
        str,
        typer.Option(metavar="LEVEL", help="With --analyze: exit 1 at this severity (or never)."),
    ] = "never",
) -> None:
    """Rewind a run to a checkpoint and train a sibling run from there with changes.

    The branch records its parent and changes in run.json and trains to the parent's last step;
    `stabdiag plot BRANCH` and `stabdiag compare BRANCH` overlay it on its parent. Changes the
    checkpoint cannot take (model shape, QK-norm, init, data) are refused. Needs the train extra.
    """

    def run() -> None:
        from stabdiag.console import err
        from stabdiag.train.branch import plan_branch

        plan = plan_branch(run_path, at, list(set_ or []), list(skip_batches or []), name)
        changes = (
            ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in plan.changes.items()) or "no changes"
        )
        err.print(
            f"branch of {plan.parent_dir} at step {plan.step} (checkpoint {plan.checkpoint.name}): {changes}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        _train_and_report(plan.config, resume=False, analyze=analyze_, fail_on=fail_on, branch=plan)

    guarded(run)


def _train_and_report(
    cfg: Any,
    *,
    resume: bool,
    analyze: bool,
    fail_on: str,
    restart: bool = False,
    branch: Any = None,
) -> None:
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from stabdiag.console import err, out
    from stabdiag.errors import TrainError

    try:
        import torch  # noqa: F401

        from stabdiag.train import train as run_training
    except ImportError:
        raise TrainError(
            "stabdiag train needs torch: pip install 'stabdiag[train]' "
            "(pip install torch==2.13.0 first for a CPU build)"
        ) from None
    from stabdiag.textfmt import at_steps, parse_fail_on

    level = parse_fail_on(fail_on)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=False, disable=not err.is_terminal) as bar:
        task = bar.add_task(cfg.run_name or f"{cfg.preset}-{cfg.recipe}", total=cfg.steps, stats="")

        def progress(step: int, m: dict[str, float]) -> None:
            stats = "  ".join(
                f"{k} {m[v]:.4g}"
                for k, v in (
                    ("loss", "train/loss"),
                    ("gnorm", "train/grad_norm"),
                    ("tok/s", "train/tokens_per_s"),
                )
                if v in m
            )
            bar.update(task, completed=step, stats=stats)

        def on_finding(
            f: dict[str, Any],
        ) -> None:  # the guard's findings, once each, as they appear
            err.print(
                f"guard: {f['severity']} {f['kind']} at step {f['step_start']}: {f['message']}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )

        result = run_training(
            cfg,
            progress=progress,
            resume=resume,
            restart=restart,
            branch=branch,
            on_finding=on_finding,
        )
    if not result.is_main:  # under torchrun rank 0 alone reports (it holds every rank's metrics)
        raise typer.Exit(result.exit_code)
    if result.note:
        err.print(result.note, markup=False, highlight=False, soft_wrap=True)
    status = "interrupted" if result.interrupted else "done"
    err.print(
        f"{status}: {result.steps_done} steps, final loss {result.final_loss:.4g} -> {result.run_dir}"
    )
    if result.stop_reason == "guard" and result.guard:
        by = result.guard["stopped_by"]
        err.print(
            f"stopped by the guard ({by['kind']} at step {by['step_start']}); checkpoint: {result.checkpoint}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if result.guard and result.guard["skipped_steps"]:
        err.print(
            f"guard skipped the optimizer step at {plural('step', len(result.guard['skipped_steps']))} {', '.join(map(str, result.guard['skipped_steps']))}",
            highlight=False,
        )
    for ev in result.injected:  # what analyze should find, so the user can check it did
        err.print(
            f"injected: {ev['kind']} at {at_steps(ev['step'], ev['last_step'])}", highlight=False
        )
    if result.stop_signal:  # SIGINT/SIGTERM: say how to continue, skip the analysis, exit 130/143
        import shlex

        argv = sys.argv[1:] if sys.argv[1:2] == ["train"] and branch is None else _resume_argv(cfg)
        argv = [a for a in argv if a not in ("--resume", "--restart")] + (
            ["--name", result.run_dir.name] if "--name" not in argv else []
        )
        err.print(
            f"stopped by {result.stop_signal}; checkpoint: {result.checkpoint or 'none written'}\n"
            f"to continue: {shlex.join(['stabdiag', *argv, '--resume'])}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(result.exit_code)
    if not analyze:
        return
    from stabdiag import api
    from stabdiag.render import OutputFormat

    report = api.analyze([result.run_dir], jobs=None)  # the policy file applies, as in `analyze`
    _emit(report, OutputFormat.TEXT, None, 5, out)
    if level is not None and report.at_or_above(level):
        raise typer.Exit(EXIT_FINDINGS)


def _resume_argv(cfg: Any) -> list[str]:
    """`stabdiag train` arguments that resolve to cfg (for the resume hint of a branch)."""
    from stabdiag.train.config import resolve

    base = resolve(cfg.preset or "tiny", cfg.recipe or None).to_dict()
    sets = [
        f"{k}={v}"
        for k, v in cfg.to_dict().items()
        if k not in ("out_dir", "run_name", "preset", "recipe", "inject", "skip_batches")
        and base[k] != v
    ]
    sets += [f"{k}={item}" for k in ("inject", "skip_batches") for item in getattr(cfg, k)]
    argv = [
        "train",
        "--preset",
        cfg.preset or "tiny",
        "--recipe",
        cfg.recipe or "stable",
        "--out",
        str(cfg.out_dir),
    ]
    return argv + [a for kv in sets for a in ("--set", kv)]


@app.command("cache")
def cache_cmd(
    action: Annotated[
        str,
        typer.Argument(metavar="ACTION", help="info (where, how many entries, how big) or clear."),
    ] = "info",
) -> None:
    """Show or empty the parsed-log cache (TensorBoard files; capped by STABDIAG_CACHE_MAX_MB)."""

    def run() -> None:
        from stabdiag.sources import cache

        if action not in ("info", "clear"):
            _fail(f"cache {action!r}: expected info or clear")
        if action == "clear":
            n = len(cache.entries())
            removed = cache.prune(0)
            sys.stdout.write(f"removed {removed} of {count(n, 'entry')} from {cache.cache_dir()}\n")
            return
        es = cache.entries()
        size = sum(b for _, b, _ in es)
        sys.stdout.write(
            f"{cache.cache_dir()}: {count(len(es), 'entry')}, {size / 2**20:.1f} MB "
            f"(limit {cache.max_bytes() / 2**20:.0f} MB, least recently used pruned first)"
            f"{'' if cache.enabled() else '; disabled by STABDIAG_NO_CACHE'}\n"
        )

    guarded(run)


@app.command()
def formats() -> None:
    """List the log formats stabdiag reads, with an example path of each (--input-format NAME forces one)."""
    from rich.markup import escape
    from rich.table import Table

    from stabdiag.console import out
    from stabdiag.sources.registry import READERS

    t = Table(box=None, header_style="bold")
    t.add_column("format")
    t.add_column("example")
    for r in READERS:
        t.add_row(r.name, escape(r.example))
    out.print(t)


@app.command()
def plot(
    paths: PathsArg,
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", metavar="DIR", help="Directory for the figures.")
    ] = Path("stabdiag-plots"),
    image_format: Annotated[
        list[str] | None,
        typer.Option(
            "--image-format",
            metavar="FORMAT",
            help="png and/or svg (repeatable). \\[default: png, svg]",
        ),
    ] = None,
    input_format: ReaderOpt = None,
    map_: MapOpt = None,
) -> None:
    """Plot every run: loss, grad norm, LR, loss scale and other stability metrics, findings marked."""

    def run() -> None:
        from stabdiag import api
        from stabdiag.atomic import write_files
        from stabdiag.console import err
        from stabdiag.render.plots import image_files

        fmts = _image_formats(image_format, ("png", "svg"))
        report = api.analyze(paths, map=_parse_map(map_), input_format=input_format, jobs=None)
        for e in report.errors:
            _warn(e)
        if not report.runs:
            _nothing_read(paths, report.errors)
        from stabdiag.diagnose import resolve_jobs

        with _figure_progress(len(report.runs)) as progress:
            images = image_files(report, fmts, jobs=resolve_jobs(None), progress=progress)
        written = write_files(out_dir, images)
        for p in written:
            err.print(str(p), highlight=False, soft_wrap=True)
        from stabdiag.train.lineage import parent_of, save_overlay

        for lineage in filter(
            None, (parent_of(p) for p in paths if p.is_dir())
        ):  # a stabdiag branch
            for p in save_overlay(lineage, out_dir, fmts):
                err.print(str(p), highlight=False, soft_wrap=True)

    guarded(run)


@app.command()
def compare(
    run_path: Annotated[
        Path,
        typer.Argument(
            metavar="RUN", callback=_local_run, help="The run to judge (file or directory)."
        ),
    ],
    baseline: Annotated[
        Path | None,
        typer.Option(
            "--baseline",
            "-b",
            metavar="RUN",
            callback=_local_run,
            help="The reference run (file or directory); default for a `stabdiag branch` run: its parent.",
        ),
    ] = None,
    plot_to: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            metavar="FILE",
            help="For a branch: write the figure overlaying it on its parent here (.png or .svg).",
        ),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", metavar="FORMAT", help="text or json.")
    ] = "text",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Write the comparison here (- = stdout). \\[default: stdout]",
        ),
    ] = None,
    max_loss_ratio: Annotated[
        float,
        typer.Option(
            metavar="RATIO",
            help="Worse when the median loss ratio over the last 10% of common steps exceeds this.",
        ),
    ] = 1.05,
    tail_frac: Annotated[
        float,
        typer.Option(
            metavar="FRACTION",
            help="Fraction of the common steps (from the end) the loss is compared over.",
        ),
    ] = 0.10,
    max_extra_spikes: Annotated[
        int, typer.Option(metavar="N", help="Loss/grad spikes allowed beyond the baseline's.")
    ] = 0,
    max_grad_p50_ratio: Annotated[
        float,
        typer.Option(
            metavar="RATIO", help="Worse when the grad-norm median grows more than this factor."
        ),
    ] = 1.5,
    max_grad_p99_ratio: Annotated[
        float,
        typer.Option(
            metavar="RATIO", help="Worse when the grad-norm p99 grows more than this factor."
        ),
    ] = 2.0,
    allow_new_kinds: Annotated[
        bool,
        typer.Option(help="Do not fail on finding kinds (warning or worse) the baseline lacks."),
    ] = False,
    input_format: ReaderOpt = None,
    map_: MapOpt = None,
) -> None:
    """Compare a run with a baseline run: exit 1 when it is less stable than allowed."""

    def run() -> None:
        from stabdiag.compare import Thresholds, compare_reports
        from stabdiag.render import output_format, render

        out_fmt = output_format(fmt, "comparison")
        if not 0 < tail_frac <= 1:
            _fail(f"--tail-frac {tail_frac}: expected a fraction in (0, 1]")
        th = Thresholds(
            max_loss_ratio=max_loss_ratio,
            tail_frac=tail_frac,
            max_extra_spikes=max_extra_spikes,
            max_grad_p50_ratio=max_grad_p50_ratio,
            max_grad_p99_ratio=max_grad_p99_ratio,
            allow_new_kinds=allow_new_kinds,
        )
        from stabdiag.console import err
        from stabdiag.train.lineage import parent_of

        lineage = parent_of(run_path) if run_path.is_dir() else None
        if lineage is not None:
            err.print(lineage.describe(), markup=False, highlight=False, soft_wrap=True)
        base_path = baseline or (lineage.parent_dir if lineage else None)
        if base_path is None:
            _fail(
                f"{run_path}: give --baseline (only a stabdiag branch run has a default: its parent)"
            )
        if plot_to is not None:
            if lineage is None:
                _fail(
                    f"--plot: {run_path} is not a stabdiag branch run (no parent in its run.json)"
                )
            if plot_to.suffix.lower() not in (".png", ".svg"):
                _fail(f"--plot {plot_to}: expected a .png or .svg file name")
            from stabdiag.atomic import write_atomic
            from stabdiag.render.plots import figure_bytes
            from stabdiag.train.lineage import overlay_figure

            fig = overlay_figure(lineage)
            write_atomic(plot_to, figure_bytes(fig, plot_to.suffix.lower()[1:]))
            fig.clear()
        overrides = _parse_map(map_)
        _refuse_overwriting_inputs(output, [run_path, base_path])  # -o run.csv destroyed the log
        from stabdiag import api

        # Both runs judged under the same policy (file, then --map), as `analyze` judges them.
        pol = api.resolve_policy(map=overrides)
        cur = api.analyze([run_path], policy=pol, input_format=input_format, jobs=None)
        base = api.analyze([base_path], policy=pol, input_format=input_format, jobs=None)
        result = compare_reports(cur, base, th)
        _write(render(result, out_fmt), output)
        if result.worse:
            raise typer.Exit(EXIT_FINDINGS)

    guarded(run)


@app.command()
def sweep(
    preset: Annotated[
        str,
        typer.Option(metavar="NAME", help="Model size: tiny, small or gpu (see stabdiag train)."),
    ] = "tiny",
    recipe: Annotated[
        str, typer.Option(metavar="NAME", help="Base recipe every cell starts from.")
    ] = "stable",
    lrs: Annotated[
        str | None,
        typer.Option(
            "--lrs", metavar="LRS", help="Learning rates, comma-separated: 1e-4,1e-3,1e-2."
        ),
    ] = None,
    lr_range: Annotated[
        str | None,
        typer.Option(
            "--lr-range", metavar="LO:HI:N", help="LO:HI:N, N log-spaced LRs: 1e-4:1e-1:7."
        ),
    ] = None,
    setting: Annotated[
        list[str] | None,
        typer.Option(
            "--setting",
            metavar="SETTING",
            help="A stabilizer setting: baseline, KEY=VALUE[,KEY=VALUE...] or NAME:KEY=VALUE,... Repeatable. \\[default: baseline and qk_norm=true]",
            show_default=False,
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            "-s",
            metavar="KEY=VALUE",
            help="Config KEY=VALUE for every cell, e.g. --set steps=500. Repeatable.",
        ),
    ] = None,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            metavar="DIR",
            help="Sweep directory: one run per cell, sweep.json, sweep.png/.svg.",
        ),
    ] = Path("runs/sweep"),
    seeds: Annotated[
        int,
        typer.Option(
            "--seeds",
            min=1,
            metavar="N",
            help="Train every (setting, LR) with this many seeds (init and data order; base = --set seed=N): the report gives the spread and an interval on each LR sensitivity.",
        ),
    ] = 1,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            "-j",
            min=1,
            metavar="N",
            help="Local backend: cells in parallel. \\[default: one per core on CPU, one per GPU on CUDA]",
            show_default=False,
        ),
    ] = None,
    devices: Annotated[
        str | None,
        typer.Option(
            "--devices",
            metavar="DEVICES",
            help="Local backend: cpu, cuda (every visible GPU) or cuda:0,cuda:1 (one cell per GPU at a time). \\[default: every visible GPU when cells use CUDA, else the CPU cores]",
            show_default=False,
        ),
    ] = None,
    cpus_per_cell: Annotated[
        int | None,
        typer.Option(
            "--cpus-per-cell",
            min=1,
            metavar="N",
            help="CPU threads (Ray: CPUs) per cell. Fix it to get the same numbers on any machine. \\[default: local shares the cores out; Ray 1]",
            show_default=False,
        ),
    ] = None,
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            metavar="NAME",
            help="local (this machine) or ray (one Ray task per cell; needs the ray extra: pip install stabdiag\\[ray]).",
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            metavar="ADDRESS",
            help="Ray cluster to join (e.g. ray://head:10001 or auto). \\[default: start a local one]",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format", "-f", metavar="FORMAT", help="Report format: text, json or markdown."
        ),
    ] = "text",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Write the report here (- = stdout). \\[default: stdout]",
        ),
    ] = None,
) -> None:
    """Train a grid of learning rates x stabilizer settings and report each setting's LR sensitivity.

    Wortsman et al. 2023: small models show large-run instabilities at high LR.
    Finished cells are not trained again: re-run the same command to resume.
    A cell that fails is reported with its reason and the rest go on; the exit code is then 1
    and a re-run retries only the failed and missing cells. Needs the train extra.
    """

    def run() -> None:
        from stabdiag.console import err
        from stabdiag.console import out as stdout
        from stabdiag.render import RenderOptions, output_format, render
        from stabdiag.sweep import (
            build_spec,
            parse_lr_range,
            parse_lrs,
            parse_setting,
            run_sweep,
            save_outputs,
        )
        from stabdiag.sweep.progress import GridProgress

        out_fmt = output_format(fmt, "sweep")
        if (lrs is None) == (lr_range is None):
            _fail("give the LR grid with exactly one of --lrs 1e-4,1e-3 or --lr-range 1e-4:1e-1:7")
        grid = parse_lrs(lrs) if lrs is not None else parse_lr_range(str(lr_range))
        spec = build_spec(
            preset=preset,
            recipe=recipe,
            lrs=grid,
            out_dir=out,
            common=list(set_ or []),
            settings=[parse_setting(s) for s in setting or ["baseline", "qk_norm=true"]],
            seeds=seeds,
        )
        with GridProgress(err) as progress:
            result = save_outputs(
                run_sweep(
                    spec,
                    jobs=jobs,
                    observer=progress,
                    devices=devices,
                    backend=backend,
                    ray_address=ray_address,
                    cpus_per_cell=cpus_per_cell,
                )
            )
        to_stdout = output is None or str(output) == "-"
        opts = (
            RenderOptions(width=stdout.width, color_system=stdout.color_system)
            if to_stdout
            else RenderOptions(width=120)
        )
        _write(render(result, out_fmt, opts), output)
        if result.failed:
            first = result.failed[0]
            _warn(
                f"{len(result.failed)} of {count(len(result.cells), 'cell')} failed (first: {first.setting} "
                f"lr={first.lr:.3g} seed {first.seed}: {first.error}); run the same command "
                "again to retry them"
            )
            raise typer.Exit(EXIT_FINDINGS)

    guarded(run)


@app.command(context_settings={"help_option_names": ["-h", "--help"]})
def verify(
    run_path: Annotated[
        Path,
        typer.Argument(
            metavar="RUN",
            callback=_local_run,
            help="A stabdiag train run directory (with --proxy: any run's logs).",
        ),
    ],
    remedies: Annotated[
        int,
        typer.Option(
            "--remedies",
            min=0,
            metavar="N",
            help="Remedies to try per event (plus one control branch with no change).",
        ),
    ] = 3,
    proxy: Annotated[
        bool,
        typer.Option(
            "--proxy",
            help="For any run's logs (another trainer's too): try the remedies on a small proxy model trained from scratch with the run's settings.",
        ),
    ] = False,
    proxy_out: Annotated[
        Path,
        typer.Option(
            "--proxy-out",
            metavar="DIR",
            help="With --proxy: where the proxy runs go (re-running reuses finished ones).",
        ),
    ] = Path("runs/verify-proxy"),
    proxy_steps: Annotated[
        int,
        typer.Option(
            "--proxy-steps",
            min=10,
            metavar="N",
            help="With --proxy: steps of each proxy run (warm-up keeps the run's fraction).",
        ),
    ] = 200,
    seeds: Annotated[
        int,
        typer.Option(
            "--seeds",
            min=1,
            metavar="N",
            help="With --proxy: seeds per setting (2+ separates a fix from noise).",
        ),
    ] = 2,
    fmt: Annotated[
        str,
        typer.Option(
            "--format", "-f", metavar="FORMAT", help="Report format: text, json or markdown."
        ),
    ] = "text",
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            "-j",
            min=1,
            metavar="N",
            help="Branches (or proxy runs) trained at once, in worker processes.",
        ),
    ] = 1,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Write the report here (- = stdout). \\[default: stdout]",
        ),
    ] = None,
    plot_to: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            metavar="FILE",
            help="Write the overlay of control and remedy loss curves here (.png or .svg).",
        ),
    ] = None,
) -> None:
    """Replay each warning-or-worse event of a `stabdiag train` run with each mid-run remedy and a control.

    Branches from the newest kept checkpoint at or before the event, one per remedy (skip the
    batches, lower the LR, clip, beta2, z-loss, bf16, warm-up) plus a control with no change, re-runs
    the detectors on each, and says per remedy: fixed, not fixed, or inconclusive (the control did not
    show the event again). Branches sit beside RUN; re-running skips finished ones. Needs the train extra.
    """

    def run() -> None:
        from stabdiag.console import err
        from stabdiag.render import output_format, render
        from stabdiag.verify import verify as run_verify

        out_fmt = output_format(fmt, "verify")
        seen: dict[str, int] = {}

        def progress(name: str, step: int, total: int) -> None:
            last = seen.get(name)
            if step == last or (
                last is not None and step < total and step - last < max(total // 10, 1)
            ):
                return  # about ten lines per branch, and the last step once
            seen[name] = step
            err.print(f"{name}: step {step}/{total}", markup=False, highlight=False)

        def on_plan(todo: list[Any]) -> None:
            err.print(
                f"verify: {count(len(todo), 'branch', 'branches')} to train or reuse, {jobs} at a time",
                markup=False,
                highlight=False,
            )

        if proxy:
            from stabdiag.verify_proxy import verify_proxy

            if not run_path.exists():
                _fail(f"{run_path}: expected a run's log file or directory, found nothing there")
            res = verify_proxy(
                run_path,
                proxy_out,
                steps=proxy_steps,
                seeds=seeds,
                max_remedies=remedies,
                jobs=jobs,
                progress=progress,
            )
            _write(render(res, out_fmt), output)
            return
        result = run_verify(
            run_path, max_remedies=remedies, jobs=jobs, progress=progress, on_plan=on_plan
        )
        _write(render(result, out_fmt), output)
        if plot_to is not None:
            from stabdiag.atomic import write_atomic
            from stabdiag.render.verify_plot import overlay_bytes

            image = overlay_bytes(result, "svg" if plot_to.suffix.lower() == ".svg" else "png")
            if image is not None:
                write_atomic(plot_to, image)
                err.print(f"overlay: {plot_to}", markup=False, highlight=False)
        if result.interrupted:
            raise typer.Exit(130)

    guarded(run)


@app.command()
def watch(
    paths: PathsArg,
    fail_on: Annotated[
        str | None,
        typer.Option(
            metavar="LEVEL",
            help="Exit 1 as soon as a finding is at or above: info, warning, error, never. \\[default: error, or the config file's fail-on]",
            show_default=False,
        ),
    ] = None,
    interval: Annotated[
        float, typer.Option(metavar="SECONDS", help="Seconds between polls of the files.")
    ] = 2.0,
    idle_timeout: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            help="The runs ended when no new data came for this many seconds (0 = never).",
        ),
    ] = 600.0,
    pid: Annotated[
        int | None,
        typer.Option(metavar="PID", help="The runs ended when this training process exits."),
    ] = None,
    on_finding: Annotated[
        str | None,
        typer.Option(
            metavar="COMMAND",
            help="Command run for each finding, the finding as JSON on stdin (Slack/webhook scripts); run without a shell: use sh -c '...' for pipes.",
        ),
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            metavar="FORMAT",
            help="text, jsonl (one JSON line per finding), github (annotations) or json (one report at the end).",
        ),
    ] = "text",
    min_severity: Annotated[
        str,
        typer.Option(
            metavar="LEVEL",
            help="Print (and --on-finding) findings at or above: info, warning, error.",
        ),
    ] = "info",
    select: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KINDS", help="Only these kinds or codes (comma-separated, repeatable)."
        ),
    ] = None,
    ignore: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KINDS", help="Skip these kinds or codes (comma-separated, repeatable)."
        ),
    ] = None,
    input_format: ReaderOpt = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="FILE",
            help="Policy file. \\[default: the nearest stabdiag.toml or pyproject.toml \\[tool.stabdiag]]",
        ),
    ] = None,
) -> None:
    """Follow runs still being written; print each finding as it appears; exit 1 at --fail-on."""

    def run() -> None:
        from stabdiag.console import err, out
        from stabdiag.live import watch_cmd
        from stabdiag.policy import load_policy
        from stabdiag.textfmt import FAIL_ON, parse_fail_on

        if fail_on is not None:
            parse_fail_on(fail_on)
        if fmt not in watch_cmd.FORMATS:
            _fail(f"--format {fmt!r}: expected one of {', '.join(watch_cmd.FORMATS)}")
        if min_severity not in FAIL_ON[:3]:
            _fail(f"--min-severity {min_severity!r}: expected info, warning or error")
        if interval <= 0 or idle_timeout < 0:
            _fail("--interval must be > 0 and --idle-timeout >= 0 seconds")
        from stabdiag.errors import remote_url

        for url in filter(None, (remote_url(p) for p in paths if not p.exists())):
            _fail(f"remote paths are not supported; download first: {url}")  # only local files grow
        pol = load_policy(config).with_flags(
            select=_split(select), ignore=_split(ignore), fail_on=fail_on
        )
        opts = watch_cmd.Options(
            paths=tuple(paths),
            fail_on=pol.fail_on,
            interval=interval,
            idle_timeout=idle_timeout,
            pid=pid,
            on_finding=on_finding,
            fmt=fmt,
            min_severity=min_severity,
            input_format=input_format,
            select=list(pol.select) if pol.select else None,
            ignore=list(pol.ignore) or None,
            configs=pol.detector_configs(),
        )
        raise typer.Exit(watch_cmd.run(opts, out, err))

    guarded(run)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C before a command's own boundary (imports, start-up)
        sys.stderr.write("error: interrupted\n")
        raise SystemExit(130) from None
