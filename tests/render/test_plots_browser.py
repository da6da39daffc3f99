"""Plots and the HTML report as a person sees them: figure structure, and a real browser render."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from render_util import make_report

from stabdiag.atomic import write_files
from stabdiag.render.html import render_html
from stabdiag.render.plots import image_files, plot_run


def test_plot_run_panels_and_labels() -> None:
    r = make_report()
    fig = plot_run(r.table, "gpt-small/seed:1", r.findings_of("gpt-small/seed:1"))
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles[:6] == [
        "Findings",
        "Loss",
        "Gradient norm",
        "Learning rate",
        "Loss scale",
        "Max attention logit",
    ]
    strip_labels = [t.get_text() for t in fig.axes[0].texts]
    assert "fp16-overflow ×5" in strip_labels and "divergence" in strip_labels
    assert fig.axes[2].get_yscale() == "log"
    # Labels sharing a lane never overlap.
    fig.canvas.draw()
    boxes = [(t.get_position()[1], t.get_window_extent()) for t in fig.axes[0].texts]
    for i, (ya, a) in enumerate(boxes):
        for yb, b in boxes[i + 1 :]:
            assert ya != yb or not a.overlaps(b)


def test_save_plots_writes_png_and_svg(tmp_path: Path) -> None:
    paths = write_files(tmp_path, image_files(make_report()))
    assert [p.suffix for p in paths] == [".png", ".svg", ".png", ".svg"]
    assert all(p.stat().st_size > 1000 for p in paths)
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


CHROMIUM = next(
    (p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None
)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")
def test_html_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    from matplotlib.image import imread

    page = tmp_path / "report.html"
    page.write_text(render_html(make_report(), plots=True, generated="now"), encoding="utf-8")
    shot = tmp_path / "shot.png"
    profile = tmp_path / "profile"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--screenshot={shot}",
        "--window-size=1280,1600",
        page.as_uri(),
    ]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert shot.exists(), "chromium wrote no screenshot"
    img = imread(shot)
    assert img.shape[0] >= 1000 and img.shape[1] >= 1200
    gray = img[..., :3].mean(axis=2)
    assert float(np.var(gray)) > 0.01  # not a blank page
    assert (gray < 0.3).mean() > 0.005  # dark pixels: text and curves were drawn
