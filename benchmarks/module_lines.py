"""Lines per module of the package at one commit against another (or the working tree).

    python benchmarks/module_lines.py --base REV [--head REV] [--all]

Counts every ``.py`` file under ``stabdiag/`` (physical lines, as ``wc -l``) at ``--base`` and at
``--head`` (default: the files as they are now, committed or not) and prints the modules whose
count changed (``--all``: every module), the modules added and removed, and the totals. Reads
git objects only; runs nothing it reads.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "stabdiag"


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout


def lines_at(rev: str | None) -> dict[str, int]:
    """{path: line count} of the package's Python files at ``rev`` (None: the working tree)."""
    if rev is None:
        return {
            str(p.relative_to(ROOT)): len(p.read_bytes().splitlines())
            for p in sorted((ROOT / PACKAGE).rglob("*.py"))
            if "__pycache__" not in p.parts
        }
    paths = [
        p for p in _git("ls-tree", "-r", "--name-only", rev, PACKAGE).split() if p.endswith(".py")
    ]
    return {p: len(_git("show", f"{rev}:{p}").encode().splitlines()) for p in paths}


def table(before: dict[str, int], after: dict[str, int], *, every: bool = False) -> str:
    rows = []
    for path in sorted(set(before) | set(after)):
        b, a = before.get(path), after.get(path)
        if every or a != b:
            note = "added" if b is None else "removed" if a is None else ""
            rows.append((path, "-" if b is None else str(b), "-" if a is None else str(a), note))
    tb, ta = sum(before.values()), sum(after.values())
    rows.append(
        ("total", str(tb), str(ta), f"{ta - tb:+d} lines, {len(before)} -> {len(after)} modules")
    )
    w = max(len(r[0]) for r in rows)
    out = [f"{'module'.ljust(w)}  {'before':>7}  {'after':>7}  "]
    out += [f"{p.ljust(w)}  {b:>7}  {a:>7}  {n}".rstrip() for p, b, a, n in rows]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the commit to count from")
    ap.add_argument(
        "--head", default=None, help="the commit to count at (default: the working tree)"
    )
    ap.add_argument("--all", action="store_true", help="list unchanged modules too")
    a = ap.parse_args()
    print(table(lines_at(a.base), lines_at(a.head), every=a.all))


if __name__ == "__main__":
    main()
