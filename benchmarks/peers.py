"""Side by side on the real logs: stabdiag vs the peer tools (runmedic, trainproof, trainpulse).

Install the peers in a scratch venv first (never into the project's):

    python3 -m venv /tmp/peers && /tmp/peers/bin/pip install runmedic trainproof 'trainpulse[cli]'
    python benchmarks/peers.py --peers /tmp/peers --logs ../shared/real_logs

For every folder it prints each tool's exit code and a one-line summary of what it reported, as
a Markdown table, so a reader can check row by row that stabdiag reads and finds at least as much.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def run(cmd: list[str], timeout: int = 300) -> tuple[int, str, str]:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, "", "timeout"
    return p.returncode, p.stdout, p.stderr


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:90] if lines else ""


def stabdiag(folder: Path) -> str:
    rc, out, err = run([sys.executable, "-m", "stabdiag", "analyze", str(folder), "-f", "json"])
    try:
        doc = json.loads(out)
    except ValueError:
        return f"exit {rc}: {last_line(err)}"
    kinds: dict[str, str] = {}
    for f in doc["findings"]:
        if f["severity"] != "info" or f["kind"] not in kinds:
            kinds[f["kind"]] = f"{f['kind']}@{f['step_start']}({f['severity'][0]})"
    return f"exit {rc}: {len(doc['runs'])} run(s); " + (", ".join(kinds.values()) or "quiet")


def runmedic(peers: Path, folder: Path) -> str:
    rc, out, err = run([str(peers / "bin" / "runmedic"), "diagnose", str(folder), "--json"])
    try:
        doc = json.loads(out)
    except ValueError:
        return f"exit {rc}: {last_line(err or out)}"
    runs = doc if isinstance(doc, list) else [doc]
    names = [
        f"{f.get('check')}@{f.get('step')}({str(f.get('severity'))[0]})"
        for r in runs
        if isinstance(r, dict)
        for f in r.get("findings", [])
        if isinstance(f, dict)
    ]
    return f"exit {rc}: {len(runs)} run(s); " + (", ".join(dict.fromkeys(names)) or "quiet")


def trainproof(peers: Path, folder: Path) -> str:
    rc, out, err = run([str(peers / "bin" / "trainproof"), "doctor", str(folder)])
    return f"exit {rc}: {last_line(out or err)}"


def trainpulse(peers: Path, folder: Path) -> str:
    files = sorted(folder.rglob("*.jsonl"))
    if not files:
        return "not ingested (JSONL only)"
    rc, out, err = run(
        [str(peers / "bin" / "python"), "-m", "trainpulse.cli", "analyze", str(files[0])]
    )
    return f"exit {rc}: {last_line(out or err)}"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--peers", type=Path, default=Path("/tmp/peers"), help="venv holding the peer tools"
    )
    ap.add_argument("--logs", type=Path, default=Path("../shared/real_logs"))
    args = ap.parse_args()
    print("| folder | stabdiag | runmedic | trainproof | trainpulse |")
    print("|---|---|---|---|---|")
    for folder in sorted(p for p in args.logs.iterdir() if p.is_dir()):
        cells = [
            stabdiag(folder),
            runmedic(args.peers, folder),
            trainproof(args.peers, folder),
            trainpulse(args.peers, folder),
        ]
        print(
            f"| {folder.name} | " + " | ".join(c.replace("|", "/") for c in cells) + " |",
            flush=True,
        )


if __name__ == "__main__":
    main()
