"""The long fuzz profile as a campaign: per-family outcome counts, by hand (not collected by pytest).

    python tests/hardening/fuzz_campaign.py --scale 4 [--timeout 10] [--mem-gb 2] [--json out.json]

Every input (seed mutations of tests/hardening/hardening_util.py plus every generator of
adversarial_util.py) is analysed in a forked child (reader + detectors + every report format) under a
wall-clock limit and an address-space limit, and classified:

- ok: a report came out; clean: a SourceError from the reader itself (one clear line);
- caught: load()'s safety net turned a reader exception into "content its reader could not handle";
- uncaught: any other exception; hang: over --timeout; memory: MemoryError or killed over --mem-gb.

Families are reader formats (the sniffed or forced one). Goal: 0 uncaught, 0 hang, 0 memory, and
"caught" only for genuinely undecodable content.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import sys
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["STABDIAG_NO_CACHE"] = "1"
os.environ["STABDIAG_JOBS"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from adversarial_util import ATTACKS  # noqa: E402
from hardening_util import mutate, place, seed_files  # noqa: E402

from stabdiag.errors import SourceError  # noqa: E402
from stabdiag.sources import FORMATS, sniff  # noqa: E402

OUTCOMES = ("ok", "clean", "caught", "uncaught", "hang", "memory")


def _analyse(path: Path, fmt: str | None) -> str:
    from stabdiag.console import make_console
    from stabdiag.diagnose import diagnose
    from stabdiag.render.github import render_github
    from stabdiag.render.html import render_html
    from stabdiag.render.json import render_json
    from stabdiag.render.junit import render_junit
    from stabdiag.render.markdown import render_markdown
    from stabdiag.render.terminal import render_terminal

    try:
        report = diagnose([path], fmt=fmt, jobs=1)
    except SourceError as exc:
        return "caught" if "could not handle" in str(exc) else "clean"
    if any("could not handle" in e for e in report.errors):
        return "caught"
    render_json(report)
    render_markdown(report)
    render_html(report)
    render_junit(report)
    render_github(report)
    con = make_console(width=110)
    with con.capture():
        con.print(render_terminal(report))
    return "ok"


def run_one(path: Path, fmt: str | None, timeout: float, mem: int) -> tuple[str, str]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
            try:
                out, detail = _analyse(path, fmt), ""
            except MemoryError:
                out, detail = "memory", ""
            except BaseException as exc:  # noqa: BLE001
                out, detail = "uncaught", f"{type(exc).__name__}: {str(exc)[:160]}"
            os.write(w, json.dumps([out, detail]).encode()[:4000])
        finally:
            os._exit(0)
    os.close(w)
    t0 = time.monotonic()
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - t0 > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(r)
            return "hang", f"> {timeout:.0f}s"
        time.sleep(0.01)
    data = os.read(r, 8192)
    os.close(r)
    if not data:
        return "memory", f"child died (status {status})"
    out, detail = json.loads(data)
    return out, detail


def inputs(scale: int, tmp: Path, seed: int):
    """(family, case id, path, forced format) for every seed mutation and every attack."""
    for name, (family, gen) in ATTACKS.items():
        d = tmp / "attacks" / name
        d.mkdir(parents=True)
        yield family, name, gen(d), None
    head = 96 * 1024
    for src in seed_files():
        data = src.read_bytes()[:head]
        fmt = sniff.sniff(src)
        rng = random.Random(zlib.crc32(f"{seed}/{src}".encode()))
        for i in range(12 * scale):
            kind, damaged = mutate(data, rng)
            f = place(tmp / "mut" / f"{abs(hash(src)) % 10**8}-{i}", src, damaged)
            forced = rng.choice([None, fmt or rng.choice(FORMATS), rng.choice(FORMATS)])
            yield forced or sniff.sniff(f) or "unknown", f"{src.name}/{kind}", f, forced


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--mem-gb", type=float, default=2.0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--only", help="only cases whose id contains this")
    ap.add_argument(
        "--attacks-only", action="store_true", help="only the adversarial_util.py cases"
    )
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=0.0,
        help="stop starting new inputs after this long and report what ran (partial)",
    )
    a = ap.parse_args()
    counts: dict[str, Counter] = defaultdict(Counter)
    bad: list[dict] = []
    partial = 0  # inputs generated before --max-seconds ran out (0: all ran)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for n, (family, case, path, forced) in enumerate(inputs(a.scale, Path(tmp), a.seed)):
            if (a.only and a.only not in case) or (a.attacks_only and case not in ATTACKS):
                continue
            if a.max_seconds and time.time() - t0 > a.max_seconds:
                partial = n
                break
            t = time.monotonic()
            out, detail = run_one(path, forced, a.timeout, int(a.mem_gb * (1 << 30)))
            counts[family][out] += 1
            if out not in ("ok", "clean"):
                bad.append(
                    {
                        "family": family,
                        "case": case,
                        "outcome": out,
                        "detail": detail,
                        "seconds": round(time.monotonic() - t, 2),
                    }
                )
                print(f"{out:9s} {family:16s} {case} {detail}", file=sys.stderr, flush=True)
            if n % 200 == 0:
                print(f"... {n} inputs, {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
    print(f"{'family':18s}" + "".join(f"{o:>10s}" for o in OUTCOMES))
    total: Counter = Counter()
    for fam in sorted(counts):
        total.update(counts[fam])
        print(f"{fam:18s}" + "".join(f"{counts[fam][o]:>10d}" for o in OUTCOMES))
    print(f"{'TOTAL':18s}" + "".join(f"{total[o]:>10d}" for o in OUTCOMES))
    if partial:
        print(f"partial: --max-seconds {a.max_seconds:g} reached after {partial} inputs")
    if a.json:
        a.json.write_text(
            json.dumps(
                {
                    "counts": {k: dict(v) for k, v in counts.items()},
                    "total": dict(total),
                    "bad": bad,
                    "seconds": round(time.time() - t0),
                    "partial_after": partial,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
