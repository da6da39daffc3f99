"""Every sample run gives exactly the kinds sample_runs/README.md promises."""

from __future__ import annotations

import re

import pytest
from common_util import SAMPLE_RUNS

from stabdiag.diagnose import diagnose


def expected_from_readme() -> dict[str, set[str]]:
    """Rows of the README table: | `name` | format | what happened | `kind`, `kind` |."""
    rows = {}
    for line in (SAMPLE_RUNS / "README.md").read_text().splitlines():
        m = re.match(r"^\|\s*`([^`]+)`\s*\|[^|]*\|[^|]*\|(.*)\|\s*$", line)
        if m:
            rows[m.group(1).rstrip("/")] = set(re.findall(r"`([a-z0-9-]+)`", m.group(2)))
    return rows


EXPECTED = expected_from_readme()

# Samples whose README row names a kind the detectors miss today: the row says what is correct, the
# test is a strict xfail, so fixing the detector turns it red until the entry is removed.
KNOWN_MISSES: dict[str, str] = {}


def test_readme_lists_every_sample() -> None:
    on_disk = {
        p.name.split(".")[0] if p.is_file() else p.name
        for p in SAMPLE_RUNS.iterdir()
        if p.name not in ("README.md", "generate.py")
    }
    assert on_disk == {k.split(".")[0] for k in EXPECTED}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=KNOWN_MISSES[n]))
        if n in KNOWN_MISSES
        else n
        for n in sorted(EXPECTED)
    ],
)
def test_sample_gives_exactly_its_kinds(name: str) -> None:
    report = diagnose([SAMPLE_RUNS / name])
    assert len(report.runs) == 1 and not report.errors
    assert {f.kind for f in report.findings} == EXPECTED[name]
