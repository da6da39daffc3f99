"""Issue 13 L6: what cannot be read is said, in one line, and the rest is still read.

Tests run as root, where chmod cannot make anything unreadable, so the listing/opening calls
are made to fail for one path (PermissionError), as they do for an ordinary user."""

from __future__ import annotations

import os
from pathlib import Path

from typer.testing import CliRunner

from stabdiag.cli import app
from stabdiag.sources import load

CSV = "step,loss\n" + "".join(f"{s},{2.0 - s * 0.01}\n" for s in range(1, 30))


def _deny_listing(monkeypatch, denied: Path) -> None:
    real = os.scandir

    def scandir(path=".", *a, **k):  # noqa: ANN001, ANN202
        if Path(path) == denied:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(os, "scandir", scandir)


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "a.csv").write_text(CSV)
    secret = tmp_path / "locked"
    secret.mkdir()
    (secret / "b.csv").write_text(CSV)
    return tmp_path, secret


def test_an_unlistable_subdirectory_is_reported_and_the_rest_is_read(tmp_path, monkeypatch):
    root, locked = _tree(tmp_path)
    _deny_listing(monkeypatch, locked)
    res = load([root])
    assert [r.name for r in res.runs] == ["a"]
    assert len(res.errors) == 1
    assert str(locked) in res.errors[0] and "Permission denied" in res.errors[0]
    assert "\n" not in res.errors[0]


def test_the_cli_names_the_unlistable_subdirectory(tmp_path, monkeypatch):
    root, locked = _tree(tmp_path)
    _deny_listing(monkeypatch, locked)
    r = CliRunner().invoke(app, ["analyze", str(root), "-f", "json"])
    assert r.exit_code in (0, 1), r.output
    assert str(locked) in r.output and "Permission denied" in r.output


def test_an_unlistable_root_is_one_line_exit_2(tmp_path, monkeypatch):
    root, _ = _tree(tmp_path)
    _deny_listing(monkeypatch, root)
    r = CliRunner().invoke(app, ["analyze", str(root)])
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(root) in lines[0] and "Permission denied" in lines[0], r.output
    assert "no log file" not in r.output


def test_an_unreadable_explicit_file_is_one_line_not_a_usage_box(tmp_path, monkeypatch):
    f = tmp_path / "run.csv"
    f.write_text(CSV)
    real_open, real_access = os.open, os.access

    def deny_open(path, flags, *a, **k):  # noqa: ANN001, ANN202
        if Path(path) == f:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", deny_open)
    # what Click's readable=True check would consult (it fails for non-root users)
    monkeypatch.setattr(
        os, "access", lambda p, m, **k: False if Path(p) == f else real_access(p, m, **k)
    )
    r = CliRunner().invoke(app, ["analyze", str(f)])
    assert r.exit_code == 2
    assert "Usage:" not in r.output and "╭" not in r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(f) in lines[0] and "Permission denied" in lines[0], r.output
