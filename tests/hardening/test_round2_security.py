"""Issue 13, security items S1-S5: each with an input built here (no stored blobs)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from adversarial_util import mlflow_bomb

from stabdiag.atomic import STALE_SECONDS, UnsafeTarget, target_kind, write_atomic
from stabdiag.errors import SourceError
from stabdiag.render.markdown import md
from stabdiag.safetext import excerpt, printable
from stabdiag.sources import load

CSV = "step,loss\n" + "".join(f"{i},{2 - i / 100}\n" for i in range(100))


def _cli(
    *args: str, env: dict | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k != "STABDIAG_DEBUG"} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "stabdiag", *args],
        capture_output=True,
        text=True,
        env=e,
        cwd=cwd,
        timeout=120,
    )


# --------------------------------------------------------------------------- S1 output targets


def test_s1_device_and_std_paths_are_written_through_not_replaced():
    # Only classified here: a regression must not be able to replace the real /dev/null.
    assert target_kind(Path("/dev/null")) == "stream"
    assert target_kind(Path("/dev/stdout")) == "stream"
    assert target_kind(Path("/dev/stderr")) == "stream"


def test_s1_fifo_is_written_through(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    t = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    t.start()
    write_atomic(fifo, "report\n")
    t.join(10)
    assert got == [b"report\n"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # still a FIFO, not a regular file
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]  # no temp file left


def test_s1_directory_target_is_refused(tmp_path):
    with pytest.raises(UnsafeTarget):
        write_atomic(tmp_path, "x")
    r = _cli("analyze", str(_csv(tmp_path / "in")), "-o", str(tmp_path), "-f", "json")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "refused" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_s1_symlink_to_regular_file_keeps_the_link(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_atomic(link, "new")
    assert link.is_symlink() and real.read_text() == "new"


def test_s1_mode_follows_umask_and_replaced_file_keeps_its_mode(tmp_path):
    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "new.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o640
    kept = tmp_path / "kept.txt"
    kept.write_text("a")
    kept.chmod(0o604)
    write_atomic(kept, "b")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o604 and kept.read_text() == "b"


def test_s1_stale_temp_files_are_cleaned(tmp_path):
    stale = tmp_path / ".r.json.abc.tmp"
    fresh = tmp_path / ".r.json.def.tmp"
    stale.write_text("half")
    fresh.write_text("in flight")
    past = time.time() - STALE_SECONDS - 5
    os.utime(stale, (past, past))
    write_atomic(tmp_path / "r.json", "{}")
    assert not stale.exists() and fresh.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root creates files in a read-only directory")
def test_s1_writable_file_in_read_only_dir_is_rewritten_in_place(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    f = d / "report.txt"
    f.write_text("old")
    d.chmod(0o555)
    try:
        write_atomic(f, "new")
        assert f.read_text() == "new"
    finally:
        d.chmod(0o755)


# --------------------------------------------------------------------------- S2 symlinks out


def _csv(d: Path, name: str = "ok.csv") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(CSV)
    return d / name


def test_s2_symlinks_out_of_the_tree_are_not_followed(tmp_path):
    root = tmp_path / "tree"
    _csv(root)
    secret = tmp_path / "secret.csv"
    secret.write_text("SECRET_TOKEN=hunter2,x\n1,2\n")
    (root / "leak.csv").symlink_to(secret)
    (root / "env.csv").symlink_to("/proc/self/environ")
    (root / "outdir").symlink_to(tmp_path, target_is_directory=True)
    (root / "inside.csv").symlink_to(root / "ok.csv")  # stays in the tree: followed
    r = load([root])
    assert sorted(i.name for i in r.runs) == ["inside", "ok"]
    assert not r.errors
    env = {"SECRET_TOKEN": "hunter2"}
    out = _cli("analyze", str(root), "-f", "markdown", env=env)
    assert "hunter2" not in out.stdout + out.stderr


def test_s2_proc_and_fifo_explicit_paths_say_what_they_are(tmp_path):
    link = tmp_path / "env.csv"
    link.symlink_to("/proc/self/environ")
    with pytest.raises(SourceError, match="never read"):
        load([link])
    fifo = tmp_path / "f.csv"
    os.mkfifo(fifo)
    r = _cli("analyze", str(fifo))
    assert r.returncode == 2 and "FIFO" in r.stderr and "no training logs" not in r.stderr


def test_s2_error_messages_quote_only_a_short_escaped_excerpt(tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text("SECRET=" + "x" * 5000 + "\x1b[2J\n1\n")
    with pytest.raises(SourceError) as exc:
        load([f])
    msg = str(exc.value)
    assert len(msg) < 400 and "\x1b" not in msg and "x" * 100 not in msg
    assert excerpt("a\x1bb\nsecond line") == "'a\\x1bb...'"


# --------------------------------------------------------------------------- S3 control characters

EVIL = "evil\x1b[2J\x1b]52;c;aGk=\x07\x1b]8;;http://x\x1b\\name\u2028\x85"


def test_s3_printable_escapes_every_control_character():
    s = printable(EVIL + "\udcff")
    assert all(c.isprintable() for c in s)
    assert "\\x1b[2J" in s and "\\u2028" in s and "\\x85" in s and s.endswith("\\xff")
    assert printable("plain/name ü") == "plain/name ü"


def test_s3_no_escape_sequence_reaches_any_output(tmp_path):
    name = EVIL.replace("/", "_")  # a file name cannot hold "/"
    d = tmp_path / f"{name}dir"
    d.mkdir()
    (d / f"{name}.csv").write_text(
        f"step,loss,{EVIL.replace(chr(10), '')}\n"
        + "".join(f"{i},{2 - i / 100},1\n" for i in range(100))
    )
    for args in (
        ["analyze", str(d)],
        ["analyze", str(d), "-f", "github"],
        ["analyze", str(d), "-f", "markdown"],
        ["series", str(d)],
    ):
        r = _cli(*args)
        for text in (r.stdout, r.stderr):
            assert "\x1b" not in text and "\x07" not in text and "\u2028" not in text, args
    bad = tmp_path / f"{name}.csv"
    bad.write_text("nostep\n1\n")
    r = _cli("analyze", str(bad))
    assert r.returncode == 2 and "\x1b" not in r.stderr and "\\x1b" in r.stderr


# --------------------------------------------------------------------------- S4 Markdown links


@pytest.mark.parametrize(
    "text",
    [
        "www.evil.example/login",
        "ops@evil.example",
        "@team",
        "see https://evil.example/x",
        "WWW.EVIL.EXAMPLE",
    ],
)
def test_s4_markdown_has_no_autolinks_or_mentions(text):
    import re

    s = md(text)
    assert not re.search(r"(?i)www\.", s) and "://" not in s and not re.search(r"\w@|@\w", s)
    assert s.replace("\u200b", "") == text  # reads the same


# --------------------------------------------------------------------------- S5 YAML aliases


def test_s5_yaml_aliases_are_refused_quickly(tmp_path):
    run = mlflow_bomb(tmp_path)
    t0 = time.perf_counter()
    r = load([run])
    assert time.perf_counter() - t0 < 5
    assert [i.name for i in r.runs] == ["r1"]  # the run is kept; the bomb is not its name
    assert len(r.table) > 0


def test_s5_lightning_hparams_with_aliases_are_ignored(tmp_path):
    from adversarial_util import BILLION_LAUGHS

    v = tmp_path / "lightning_logs" / "version_0"
    v.mkdir(parents=True)
    (v / "metrics.csv").write_text(CSV)
    (v / "hparams.yaml").write_text(BILLION_LAUGHS)
    r = load([v / "metrics.csv"])
    assert "hparams.yaml not readable" in " ".join(r.runs[0].warnings)


def test_s5_non_string_run_name_is_not_a_name(tmp_path):
    from adversarial_util import _ml_loss, mlflow_run

    run = mlflow_run(tmp_path, "run_id: r1\nrun_name: [a, b]\n", {"loss": _ml_loss()})
    assert [i.name for i in load([run]).runs] == ["r1"]
