"""Issue 13: analysis and report defects (C7-C9, D5, D6, L1, L6, L7, cosmetics), inputs built here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from stabdiag.diagnose import diagnose


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "STABDIAG_DEBUG"}
    return subprocess.run(
        [sys.executable, "-m", "stabdiag", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def _spiky_csv(path: Path, extra: str = "", cell=lambda i: "") -> Path:
    rows = [f"{i},{8.0 if i == 150 else 2.0 - i / 400}{cell(i)}" for i in range(300)]
    path.write_text(f"step,loss{extra}\n" + "\n".join(rows) + "\n")
    return path


# --------------------------------------------------------------------------- C7


def test_c7_a_crashing_detector_becomes_its_skipped_entry(tmp_path):
    # fp16-overflow's log2(ref/min) overflows on a loss scale of 5e-324 (a denormal).
    f = _spiky_csv(
        tmp_path / "run.csv", ",loss_scale", lambda i: f",{5e-324 if i > 100 else 65536.0}"
    )
    report = diagnose([f], jobs=1)
    errs = [s for s in report.skipped if "detector error" in s.reason]
    assert [s.kind for s in errs] == ["fp16-overflow"]
    assert any(f.kind == "loss-spike" for f in report.findings)  # the rest of the report stands
    r = _cli("analyze", str(f), "-f", "json", "--fail-on", "never")
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert any("detector error" in s["reason"] for s in json.loads(r.stdout)["skipped"])
