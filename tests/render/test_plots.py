"""Plots as an ML engineer reads them, asserted on the figure objects (artists, tick labels, line
segments), never on pixels: events marked one by one, bands only for sustained findings, tick
labels that differ, log axes that read, lines broken at gaps and restarts, unknown series drawn;
and each run's series cut once, by ``diagnose``, then only read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import LineCollection
from matplotlib.patches import Rectangle

from stabdiag.atomic import write_files
from stabdiag.findings import Finding, Severity
from stabdiag.render import plots
from stabdiag.render.html import render_html
from stabdiag.render.plots import draw_run, envelope, image_files, render_runs, segment_ids
from stabdiag.report import Report, RunSummary
from stabdiag.table import (
    GRAD_NORM,
    LR,
    RESTART,
    TRAIN_LOSS,
    VAL_LOSS,
    MetricsTable,
    RunData,
    Series,
)

RUN = "run-a"


def series(steps, values) -> Series:  # noqa: ANN001
    return Series(np.asarray(steps, dtype=np.int64), np.asarray(values, dtype=np.float64))


def rundata(n: int = 600, **extra: Series) -> RunData:
    steps = np.arange(n)
    rng = np.random.default_rng(1)
    loss = 2 + 3 * (1 + steps / 50) ** -0.5 + rng.normal(0, 0.01, n)
    grad = 0.6 + 0.05 * rng.standard_normal(n)
    return RunData(
        name=RUN, series={TRAIN_LOSS: series(steps, loss), GRAD_NORM: series(steps, grad), **extra}
    )


def finding(
    kind: str, metric: str, a: int, b: int, sev: Severity = Severity.WARNING, **ev: object
) -> Finding:
    return Finding(
        code="SD1",
        kind=kind,
        severity=sev,
        run=RUN,
        metric=metric,
        step_start=a,
        step_end=b,
        message="m",
        evidence=dict(ev),
    )


def panel(fig, title: str):  # noqa: ANN001, ANN201
    return next(ax for ax in fig.axes if ax.get_title(loc="left") == title)


def bands(ax) -> list[Rectangle]:  # noqa: ANN001
    return [p for p in ax.patches if isinstance(p, Rectangle) and p.get_width() > 0]


def shown_labels(fig, ax, axis: str = "y") -> list[str]:  # noqa: ANN001
    fig.canvas.draw()
    lo, hi = sorted(ax.get_ylim() if axis == "y" else ax.get_xlim())
    ticks = ax.get_yticklabels() if axis == "y" else ax.get_xticklabels()
    return [t.get_text() for t in ticks if lo <= (t.get_position()[1 if axis == "y" else 0]) <= hi]


def test_spikes_are_marked_one_by_one_and_sustained_findings_are_bands() -> None:
    spikes = finding("grad-spike", GRAD_NORM, 100, 500, spike_steps=[100, 110, 500])
    div = finding("divergence", TRAIN_LOSS, 450, 599, Severity.ERROR)
    fig = draw_run(rundata(), [spikes, div])
    strip, grad = fig.axes[0], panel(fig, "Gradient norm")
    # One tick per spike in the strip, not a band over 100-500.
    ticks = [c for c in strip.collections if isinstance(c, LineCollection)]
    assert sorted(seg[0][0] for c in ticks for seg in c.get_segments()) == [100, 110, 500]
    # One ring per spike on the grad-norm curve, at the logged value.
    rings = [ln for ln in grad.lines if ln.get_marker() == "o" and ln.get_linestyle() == "None"]
    assert len(rings) == 1 and list(rings[0].get_xdata()) == [100, 110, 500]
    # Only the divergence is shaded: one band per panel, over its own range.
    for ax in fig.axes[1:]:
        assert [(b.get_x(), b.get_x() + b.get_width()) for b in bands(ax)] == [(450, 599)]
    # Labels count the events of a cluster: two close spikes read "×2", the far one stands alone.
    assert sorted(t.get_text() for t in strip.texts) == [
        "divergence",
        "grad-spike",
        "grad-spike ×2",
    ]


def test_overfitting_is_labelled_as_overfitting() -> None:
    val = series(np.arange(0, 600, 50), np.linspace(3, 3.6, 12))
    of = finding("divergence", VAL_LOSS, 300, 550, Severity.INFO, overfitting=True)
    fig = draw_run(rundata(**{VAL_LOSS: val}), [of])
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert labels == ["overfitting"]


def test_constant_axis_has_distinct_tick_labels() -> None:
    lr = series(np.arange(600), np.full(600, 3e-4))
    fig = draw_run(rundata(**{LR: lr}), [])
    labels = shown_labels(fig, panel(fig, "Learning rate"))
    assert len(labels) >= 2 and all(labels)
    assert len(set(labels)) == len(labels), labels
    assert "3e-4" in labels


def test_narrow_log_axis_has_two_labelled_ticks() -> None:
    # grad norm between 0.55 and 0.65: less than a decade, where a plain log locator labels nothing
    fig = draw_run(rundata(), [])
    labels = [t for t in shown_labels(fig, panel(fig, "Gradient norm")) if t]
    assert len(labels) >= 2 and len(set(labels)) == len(labels), labels
    assert panel(fig, "Gradient norm").get_yscale() == "log"


def test_lines_break_at_gaps_and_restarts() -> None:
    steps = np.r_[np.arange(0, 100), np.arange(1000, 1100)]  # a logging gap of 900 steps
    data = RunData(
        name=RUN,
        series={
            TRAIN_LOSS: series(steps, np.linspace(3, 2, len(steps))),
            RESTART: series([1050], [1080]),  # resumed at 1050 after logging up to 1080
        },
    )
    fig = draw_run(data, [])
    line = next(ln for ln in panel(fig, "Loss").lines if ln.get_label() == "train loss")
    x = np.asarray(line.get_xdata(), dtype=float)
    pieces = [p for p in np.split(x, np.flatnonzero(np.isnan(x))) if len(p[~np.isnan(p)])]
    spans = [(int(np.nanmin(p)), int(np.nanmax(p))) for p in pieces]
    assert spans == [(0, 99), (1000, 1049), (1050, 1099)]
    # The typical spacing is not a gap: a steady every-10-steps log is one piece.
    assert segment_ids(np.arange(0, 1000, 10)).max() == 0


def test_run_with_only_unknown_series_plots_them() -> None:
    steps = np.arange(200)
    data = RunData(
        name=RUN,
        series={
            "physics_residual": series(steps, np.exp(-steps / 50)),
            "bc_error": series(steps, 1 + 0 * steps),
        },
    )
    fig = draw_run(data, [])
    titles = [ax.get_title(loc="left") for ax in fig.axes[1:]]
    assert titles == ["bc_error", "physics_residual"]
    assert all(len(ax.lines) == 1 and len(ax.lines[0].get_xdata()) == 200 for ax in fig.axes[1:])


def test_envelope_keeps_a_one_step_spike_and_draws_no_more_than_the_pixels() -> None:
    steps = np.arange(200_000)
    values = np.sin(steps / 1000.0)
    values[123_457] = 50.0
    idx = envelope(steps, values, width=800)
    assert len(idx) <= 1600 and 123_457 in idx
    assert values[idx].min() == values.min()


def report_of(runs: dict[str, RunData], findings: tuple[Finding, ...] = ()) -> Report:
    return Report(
        runs=tuple(
            RunSummary(name=n, path=n, format="csv", steps=(0, 1), metrics=()) for n in runs
        ),
        findings=findings,
        skipped=(),
        remedies=(),
        series=runs,
    )


def test_parallel_rendering_gives_the_same_bytes_and_reports_progress(tmp_path: Path) -> None:
    runs = {name: RunData(name=name, series=rundata(300).series) for name in ("a", "b", "c")}
    report = report_of(runs)
    seen: list[tuple[int, int, str]] = []
    serial = render_runs(report, ("png",), jobs=1)
    parallel = render_runs(report, ("png",), jobs=2, progress=lambda *a: seen.append(a))
    assert list(parallel) == ["a", "b", "c"] and parallel == serial
    assert sorted(d for d, _, _ in seen) == [1, 2, 3] and {t for _, t, _ in seen} == {3}
    assert {r for _, _, r in seen} == {"a", "b", "c"}
    ticks: list[str] = []
    page = render_html(report, plots=True, progress=lambda d, t, r: ticks.append(r))
    assert ticks == ["a", "b", "c"] and page.count("data:image/png;base64,") == 3
    paths = write_files(tmp_path, image_files(report, ("png",), jobs=2))
    assert [p.name for p in paths] == ["a.png", "b.png", "c.png"]
    assert paths[0].read_bytes() == serial["a"]["png"]


def test_plots_read_the_series_diagnose_cut_and_never_cut_the_table_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stabdiag

    rng = np.random.default_rng(0)
    loss = 3 - np.arange(300) / 200 + rng.normal(0, 0.02, 300)
    loss[200] = 9.0
    csv = tmp_path / "run.csv"
    csv.write_text(
        "step,loss,grad_norm\n"
        + "".join(f"{i},{v:.5f},{1 + (i == 200) * 30}\n" for i, v in enumerate(loss))
    )
    report = stabdiag.analyze(csv, cache=False)
    name = report.runs[0].name
    assert report.run_data(name) is report.series[name]
    assert (
        report.to_dict() == stabdiag.analyze(csv, cache=False).to_dict()
    )  # the contract is unchanged
    assert "series" not in report.to_dict()

    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("the table was cut again")

    monkeypatch.setattr(MetricsTable, "run_data", refuse)
    monkeypatch.setattr(MetricsTable, "series", refuse)
    assert len(image_files(report, ("png",))) == 1
    assert "data:image/png;base64," in render_html(report, plots=True)


def test_a_hand_made_report_without_series_is_cut_from_its_table() -> None:
    table = MetricsTable.from_records(
        RUN, np.arange(50), [TRAIN_LOSS] * 50, np.linspace(3, 2, 50), source="t"
    )
    report = Report(
        runs=(RunSummary(name=RUN, path="p", format="csv", steps=(0, 49), metrics=(TRAIN_LOSS,)),),
        findings=(),
        skipped=(),
        remedies=(),
        table=table,
    )
    data = report.run_data(RUN)
    assert data is not None and len(data.series[TRAIN_LOSS]) == 50
    assert report.run_data("no such run") is None
    assert plots.plot_run(report, RUN, []).axes[1].get_title(loc="left") == "Loss"


def test_tick_labels_are_exact_not_just_distinct() -> None:
    fmt = plots.DistinctFormatter("g")
    for locs in ([1, 1.25, 1.5, 1.75, 2], [0.00027, 0.00028, 0.00029, 0.0003], [0.1 + 0.2, 0.5]):
        fmt.set_locs(locs)
        labels = [fmt(v) for v in locs]
        assert len(set(labels)) == len(labels)
        assert all(abs(float(t) - v) < 1e-9 for t, v in zip(labels, locs, strict=True)), labels
    lr = plots.DistinctFormatter("lr")
    lr.set_locs([0, 2.5e-5, 5e-5])
    assert [lr(v) for v in (0, 2.5e-5, 5e-5)] == ["0", "2.5e-5", "5e-5"]


def test_cli_progress_bar_ticks_once_per_run_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    import stabdiag.console
    from stabdiag.cli import _figure_progress

    buf = io.StringIO()
    monkeypatch.setattr(stabdiag.console, "err", Console(file=buf, force_terminal=True, width=100))
    report = report_of({n: RunData(name=n, series=rundata(100).series) for n in ("a", "b")})
    with _figure_progress(len(report.runs)) as progress:
        assert progress is not None
        render_runs(report, ("png",), progress=progress)
    shown = buf.getvalue()
    assert "drawing plots" in shown and "1/2" in shown and "2/2" in shown
    # Off a terminal (a CI log) there is no bar and no callback.
    monkeypatch.setattr(stabdiag.console, "err", Console(file=io.StringIO(), force_terminal=False))
    with _figure_progress(2) as progress:
        assert progress is None


SAMPLE_RUNS = Path(__file__).resolve().parents[2] / "sample_runs"


def test_a_used_frame_draws_every_run_byte_for_byte_as_a_new_figure() -> None:
    """Reports draw run after run into one figure whose axes are kept (plots._Frame): whatever
    ran before, a run's image must equal the one drawn in a new figure, in PNG and SVG."""
    import stabdiag

    names = ("loss_spike.csv", "unstable", "fp16_overflow.csv")  # 3, 8 and 4 panels
    report = stabdiag.analyze([SAMPLE_RUNS / n for n in names], cache=False, jobs=1)
    jobs = [plots._job(report, r.name, ("png", "svg")) for r in report.runs]
    nan_grad = rundata(300, **{GRAD_NORM: series(np.arange(300), np.full(300, np.nan))})
    steps = np.arange(200)
    unknown = {"residual": series(steps, np.exp(-steps / 20)), "bc": series(steps, 1 + 0 * steps)}
    extra = [
        RunData(name="nan-grad", series=nan_grad.series),  # an empty log panel: autoscaled
        RunData(name="unknown", series=unknown),
        RunData(name=RUN, series=rundata(600, **{RESTART: series([300], [350])}).series),
    ]
    jobs += [plots.PlotJob(run, (), ("png", "svg")) for run in extra]
    assert len({len(plots._active_panels(j.run, j.findings)) for j in jobs}) >= 3
    fresh = {
        j.run.name: {f: plots.figure_bytes(draw_run(j.run, j.findings), f) for f in j.formats}
        for j in jobs
    }
    frame = plots._Frame()
    # Panels grow and shrink, log and linear swap: forwards in PNG, backwards in SVG.
    for fmt, order in (("png", jobs), ("svg", jobs[::-1])):
        for j in order:
            fig = plots._draw(j.run, j.findings, None, frame)
            assert plots.figure_bytes(fig, fmt) == fresh[j.run.name][fmt], (j.run.name, fmt)


def test_analyze_plots_write_the_formats_asked_for_png_by_default(tmp_path: Path) -> None:
    """``analyze --plots`` draws what the reports show (PNG) unless ``--image-format`` asks for
    more: an SVG costs half as much again per run."""
    from typer.testing import CliRunner

    from stabdiag.cli import app

    runner = CliRunner()
    csv = tmp_path / "run.csv"
    csv.write_text("step,loss\n" + "".join(f"{i},{3 - i / 100}\n" for i in range(100)))
    base = ["analyze", str(csv), "--fail-on", "never", "-o", str(tmp_path / "r.html")]
    r = runner.invoke(app, [*base, "-f", "html", "--plots", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["run.png"]
    assert "data:image/png;base64," in (tmp_path / "r.html").read_text()
    args = ["--plots", str(tmp_path / "b"), "--image-format", "svg", "--image-format", "png,svg"]
    r = runner.invoke(app, [*base, *args])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["run.png", "run.svg"]
    for bad, says in (
        (["--plots", str(tmp_path / "c"), "--image-format", "gif"], "'gif': expected png or svg"),
        (["--image-format", "svg"], "only with --plots DIR"),
    ):
        r = runner.invoke(app, [*base, *bad])
        assert r.exit_code == 2 and says in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    assert not (tmp_path / "c").exists()


def test_png_bytes_hold_the_pixels_savefig_draws_as_rgb() -> None:
    """figure_bytes encodes the canvas itself (RGB when opaque): the same pixels as savefig."""
    import io

    import matplotlib
    from PIL import Image

    fig = draw_run(rundata(300), [finding("loss-spike", TRAIN_LOSS, 100, 100)])
    ours = Image.open(io.BytesIO(plots.figure_bytes(fig, "png")))
    ref = io.BytesIO()
    with matplotlib.rc_context(plots.TEXT_RC):
        fig.savefig(ref, format="png", dpi=plots.DPI)
    theirs = Image.open(ref)
    assert ours.mode == "RGB" and ours.size == theirs.size
    assert np.array_equal(np.asarray(ours.convert("RGBA")), np.asarray(theirs.convert("RGBA")))
