"""`stabdiag verify --proxy`: try the remedies of another trainer's run on a small proxy model.

A run from another trainer cannot be rewound, but its trouble often can be reproduced small:
instabilities of large runs at high LR reproduce in small models trained at the same LR
(Wortsman et al. 2023, arXiv:2309.14322). The proxy is `stabdiag train`'s preset model with the
run's settings carried over where the run's config names them: precision, peak LR, warm-up as a
fraction of the run, LR schedule and its floor as a fraction of the peak, clip, beta2, weight
decay, norm placement, QK-norm and z-loss. Sizes come from the preset.

First the proxy trains at the run's settings with 2+ seeds: if none of the seeds shows the run's
trouble, the verdict is "not reproduced at small scale" and no remedy is tried. Otherwise each
remedy trains from scratch with the same seeds (a new model is fair here: QK-norm, pre-LN and
z-loss can be tried) and is judged against the proxy: fixed when no seed shows the trouble, not
fixed when every seed does, inconclusive in between.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from stabdiag.errors import TrainError
from stabdiag.findings import Finding, Severity
from stabdiag.verify import Event, _join, find_events

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ProxyChange:
    """A remedy as the proxy model can try it: its name, how the report phrases it, and the
    training settings it sets."""

    remedy: str
    phrase: str
    sets: tuple[str, ...]


@dataclass(frozen=True)
class ProxyTrial:
    """One change tried on the proxy over several seeds: per seed, whether the trouble showed and
    the final loss, and the verdict."""

    change: ProxyChange
    runs: tuple[str, ...]
    hits: tuple[bool | None, ...]
    """Per seed: did the trouble show (None: the run crashed)."""
    final_losses: tuple[float | None, ...]
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "remedy": self.change.remedy,
            "changes": list(self.change.sets),
            "runs": list(self.runs),
            "recurred": list(self.hits),
            "final_loss": list(self.final_losses),
            "resolved": {"fixed": True, "not fixed": False}.get(self.verdict),
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class ProxyResult:
    """What ``stabdiag verify --proxy`` found for a run: the proxy's settings, the baseline trial
    without a change, each remedy's trial and the overall verdict."""

    run: str
    kinds: tuple[str, ...]
    settings: tuple[str, ...]
    """The proxy's `--set` overrides taken from the run's config."""
    baseline: ProxyTrial | None
    trials: tuple[ProxyTrial, ...]
    untried: tuple[str, ...]
    verdict: str
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "proxy": True,
            "kinds": list(self.kinds),
            "settings": list(self.settings),
            "baseline": self.baseline.to_dict() if self.baseline else None,
            "trials": [t.to_dict() for t in self.trials],
            "untried": list(self.untried),
            "verdict": self.verdict,
            "wall_s": round(self.wall_s, 2),
        }


def proxy_settings(config: Any, proxy_steps: int) -> list[str]:
    """`--set` overrides that carry the run's configured settings (a runconfig.RunConfig, or None)
    over to a proxy of `proxy_steps` steps. Settings the config does not name keep the preset's."""
    get = config.get if config else (lambda _name: None)
    out: list[str] = []
    lr = get("lr")
    if isinstance(lr, (int, float)) and lr > 0:
        out.append(f"lr={lr:g}")
        floor = get("min_lr")
        out.append(f"min_lr={(floor if isinstance(floor, (int, float)) else 0.1 * lr):g}")
    total, warm, ratio = get("total_steps"), get("warmup_steps"), get("warmup_ratio")
    frac = None
    if isinstance(ratio, (int, float)):
        frac = float(ratio)
    elif isinstance(warm, int) and isinstance(total, int) and total > 0:
        frac = warm / total
    elif isinstance(warm, int) and warm == 0:
        frac = 0.0
    if frac is not None:
        out.append(f"warmup_steps={round(min(max(frac, 0.0), 1.0) * proxy_steps)}")
    sched = str(get("schedule") or "").lower()
    if sched in ("cosine", "linear", "constant"):
        out.append(f"decay={sched}")
    clip = get("clip")
    if isinstance(clip, (int, float)):
        out.append(f"grad_clip={clip:g}")
    for key in ("beta2", "weight_decay", "z_loss"):
        v = get(key)
        if isinstance(v, (int, float)):
            out.append(f"{key}={v:g}")
    prec = str(get("precision") or "").lower()
    if prec in ("fp32", "fp16", "bf16"):
        out.append(f"precision={prec}")
    place = str(get("norm_placement") or "").lower()
    if place in ("pre", "post"):
        out.append(f"norm_placement={place}")
    qk = get("qk_norm")
    if isinstance(qk, bool):
        out.append(f"qk_norm={str(qk).lower()}")
    return out


def proxy_changes(
    event: Event, base: dict[str, Any], rules_of: Callable[[Finding], Sequence[Any]]
) -> tuple[list[ProxyChange], list[str]]:
    """The event's remedies as proxy settings (from scratch, so model changes are fair); `base` is
    the proxy's resolved config as a dict."""
    worst = max(f.severity for f in event.findings)
    ids = list(
        dict.fromkeys(
            r.id
            for f in sorted(event.findings, key=lambda f: -int(f.severity))
            for r in rules_of(f)
        )
    )
    made: dict[str, ProxyChange] = {}
    untried: list[str] = []
    for rid in ids:
        ch: ProxyChange | None = None
        if rid == "lower-lr":
            factor = 10 if worst >= Severity.ERROR else 2
            lr = base["lr"] / factor
            ch = ProxyChange(
                "lower-lr",
                f"lowering the LR {factor}x ({base['lr']:g} -> {lr:g})",
                (f"lr={lr:g}", f"min_lr={min(base['min_lr'], lr / 10):g}"),
            )
        elif rid in ("clip", "adaptive-clip"):
            clip = base["grad_clip"] / 2 if base["grad_clip"] > 0 else 1.0
            ch = ProxyChange("clip", f"clipping at {clip:g}", (f"grad_clip={clip:g}",))
        elif rid == "beta2" and base["beta2"] > 0.95:
            ch = ProxyChange("beta2", f"beta2 0.95 (from {base['beta2']:g})", ("beta2=0.95",))
        elif rid == "z-loss" and base["z_loss"] <= 0:
            ch = ProxyChange("z-loss", "z-loss 1e-4", ("z_loss=1e-4",))
        elif rid == "qk-norm" and not base["qk_norm"]:
            ch = ProxyChange("qk-norm", "QK-norm", ("qk_norm=true",))
        elif rid == "pre-ln" and base["norm_placement"] != "pre":
            ch = ProxyChange("pre-ln", "pre-LN", ("norm_placement=pre",))
        elif rid == "bf16" and base["precision"] == "fp16":
            ch = ProxyChange("bf16", "bf16 instead of fp16", ("precision=bf16",))
        elif rid == "warmup":
            n = max(2 * base["warmup_steps"], round(0.05 * base["steps"]), 1)
            ch = ProxyChange(
                "warmup",
                f"a {n}-step warm-up (from {base['warmup_steps']})",
                (f"warmup_steps={n}",),
            )
        elif rid in ("rewind", "skip-spike-updates", "check-data", "injected"):
            untried.append(
                f"{rid}: the proxy trains on other data; skipping the run's batches means nothing there"
            )
        else:
            untried.append(
                f"{rid}: the run already has it, or no setting of the proxy expresses it"
            )
        if ch is not None and ch.remedy not in made:
            made[ch.remedy] = ch
    return list(made.values()), untried


def _hit(run_dir: Path, kinds: tuple[str, ...]) -> tuple[bool, float | None]:
    from stabdiag.api import analyze

    report = analyze([run_dir], jobs=1)
    hit = any(f.kind in kinds and f.severity >= Severity.WARNING for f in report.findings)
    try:
        final = json.loads((run_dir / "run.json").read_text()).get("final_loss")
    except (OSError, ValueError):
        final = None
    return hit, final if isinstance(final, (int, float)) else None


def _finished(cfg: Any) -> bool:
    try:
        meta = json.loads((Path(cfg.out_dir) / cfg.run_name / "run.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("finished") is not None and meta.get("stop_reason") in (
        "completed",
        "nonfinite",
    )


def _train_one(cfg: Any, progress: Progress | None = None, queue: Any = None) -> str:
    """Train one proxy run unless an earlier verify finished it; returns 'done', 'reused',
    'interrupted' or 'crashed: ...'. Safe to call in a worker process."""
    from stabdiag.train import train

    d = Path(cfg.out_dir) / cfg.run_name
    if _finished(cfg):
        return "reused"

    def report(step: int, _m: dict[str, float]) -> None:
        if progress is not None:
            progress(cfg.run_name, step, cfg.steps)
        if queue is not None:
            queue.put((cfg.run_name, step, cfg.steps))

    try:
        result = train(cfg, progress=report, restart=d.exists())
    except Exception as exc:  # noqa: BLE001 - one crashed proxy run must not stop the others
        return f"crashed: {exc}"
    return "interrupted" if result.interrupted else "done"


def _train_all(cfgs: Sequence[Any], jobs: int, progress: Progress | None) -> dict[str, str]:
    """Train the proxy runs, `jobs` at a time in worker processes (1: here)."""
    if jobs > 1:  # runs an earlier verify finished need no worker process
        todo = [c for c in cfgs if not _finished(c)]
        if len(todo) < len(cfgs):
            return {**{c.run_name: "reused" for c in cfgs}, **_train_all(todo, jobs, progress)}
    if jobs <= 1 or len(cfgs) <= 1:
        out: dict[str, str] = {}
        for cfg in cfgs:
            out[cfg.run_name] = _train_one(cfg, progress)
            if out[cfg.run_name] == "interrupted":
                break
        return out
    import multiprocessing
    import queue as queue_mod
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("spawn")  # torch and fork do not mix
    out = {}
    with ctx.Manager() as manager, ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        q = manager.Queue()
        pending = {pool.submit(_train_one, cfg, None, q): cfg for cfg in cfgs}
        while pending:
            done, _ = wait(pending, timeout=0.3, return_when=FIRST_COMPLETED)
            while True:
                try:
                    msg = q.get_nowait()
                except queue_mod.Empty:
                    break
                if progress is not None:
                    progress(*msg)
            for fut in done:
                cfg = pending.pop(fut)
                try:
                    out[cfg.run_name] = fut.result()
                except Exception as exc:  # noqa: BLE001 - a dead worker is one crashed run
                    out[cfg.run_name] = f"crashed: {exc}"
    return out


def _trial(
    change: ProxyChange, cfgs: list[Any], kinds: tuple[str, ...], status: dict[str, str]
) -> ProxyTrial:
    if any(status.get(c.run_name, "interrupted") == "interrupted" for c in cfgs):
        raise TrainError(
            "interrupted: re-run the same command to continue (finished proxy runs are reused)"
        )
    hits: list[bool | None] = []
    finals: list[float | None] = []
    for cfg in cfgs:
        if status[cfg.run_name].startswith("crashed"):
            hit, final = None, None
        else:
            hit, final = _hit(Path(cfg.out_dir) / cfg.run_name, kinds)
        hits.append(hit)
        finals.append(final)
    seen = [h for h in hits if h is not None]
    if not seen:
        verdict = "inconclusive"
    elif not any(seen):
        verdict = "fixed"
    elif all(seen) and len(seen) == len(hits):
        verdict = "not fixed"
    else:
        verdict = "inconclusive"
    return ProxyTrial(change, tuple(c.run_name for c in cfgs), tuple(hits), tuple(finals), verdict)


def verify_proxy(
    path: Path,
    out_dir: Path,
    *,
    preset: str = "tiny",
    steps: int = 200,
    seeds: int = 2,
    max_remedies: int = 3,
    jobs: int = 1,
    progress: Progress | None = None,
) -> ProxyResult:
    """Analyse `path` (any log stabdiag reads), build its proxy, check it reproduces the run's
    trouble and try the remedies on it; proxy runs go under `out_dir` (re-running reuses them)."""
    t0 = time.perf_counter()
    try:
        import torch  # noqa: F401
    except ImportError:
        raise TrainError(
            "stabdiag verify --proxy trains a proxy model and needs torch: pip install 'stabdiag[train]'"
        ) from None
    from stabdiag.api import analyze
    from stabdiag.remedies import rules_for
    from stabdiag.train.config import resolve

    report = analyze([path], jobs=1)
    if not report.runs:
        raise TrainError(
            f"{path}: expected training logs stabdiag can read, found none (see `stabdiag formats`)"
        )
    if len(report.runs) > 1:
        raise TrainError(
            f"{path}: expected one run, found {len(report.runs)}; give one run's directory"
        )
    summary = report.runs[0]
    events = find_events(report.findings)
    settings = proxy_settings(summary.config, steps)
    if not events:
        return ProxyResult(
            summary.name,
            (),
            tuple(settings),
            None,
            (),
            (),
            "nothing to verify: no warning-or-worse finding in the run",
            time.perf_counter() - t0,
        )
    kinds = tuple(dict.fromkeys(k for e in events for k in e.kinds))
    findings = tuple(f for e in events for f in e.findings)
    merged = Event(events[0].start, events[-1].end, findings)
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in summary.name)

    def cfgs(tag: str, extra: Sequence[str]) -> list[Any]:
        base = [f"steps={steps}", f"out_dir={out_dir}", "threads=1", *settings, *extra]
        return [
            resolve(
                preset, "stable", None, [*base, f"seed={s}", f"run_name={name}-proxy-{tag}-s{s}"]
            )
            for s in range(seeds)
        ]

    base_cfgs = cfgs("asis", [])
    baseline = _trial(
        ProxyChange("as-is", "the run's settings", ()),
        base_cfgs,
        kinds,
        _train_all(base_cfgs, jobs, progress),
    )
    changes, untried = proxy_changes(merged, base_cfgs[0].to_dict(), rules_for)
    if not any(baseline.hits):
        return ProxyResult(
            summary.name,
            kinds,
            tuple(settings),
            replace(baseline, verdict="not reproduced"),
            (),
            tuple(untried),
            f"not reproduced at small scale: no proxy seed showed {', '.join(kinds)}",
            time.perf_counter() - t0,
        )
    tried = [(ch, cfgs(ch.remedy, ch.sets)) for ch in changes[:max_remedies]]
    status = _train_all([c for _, cs in tried for c in cs], jobs, progress)
    trials = tuple(_trial(ch, cs, kinds, status) for ch, cs in tried)
    fixed = [t.change.phrase for t in trials if t.verdict == "fixed"]
    failed = [t.change.phrase for t in trials if t.verdict == "not fixed"]
    line = f"the proxy reproduces {', '.join(kinds)} in {sum(bool(h) for h in baseline.hits)}/{seeds} seeds"
    if fixed:
        line += f"; {_join(fixed)} remove{'s' if len(fixed) == 1 else ''} it"
    if failed:
        line += f"; {_join(failed)} do{'es' if len(failed) == 1 else ''} not"
    return ProxyResult(
        summary.name,
        kinds,
        tuple(settings),
        replace(baseline, verdict="reproduced"),
        trials,
        tuple(untried),
        line,
        time.perf_counter() - t0,
    )


def render_proxy_text(r: ProxyResult) -> str:
    lines = [
        f"stabdiag verify --proxy · {r.run} · {r.wall_s:.1f} s",
        f"  proxy settings from the run: {' '.join(r.settings) or '(none found: preset defaults)'}",
    ]
    rows = ([r.baseline] if r.baseline else []) + list(r.trials)
    for t in rows:
        rec = "/".join("-" if h is None else ("yes" if h else "no") for h in t.hits)
        fin = "/".join("-" if x is None else f"{x:.4g}" for x in t.final_losses)
        lines.append(
            f"  {t.change.remedy:<10} {' '.join(t.change.sets) or 'no change':<34} "
            f"trouble {rec:<8} {t.verdict:<14} final loss {fin}"
        )
    lines.append(f"  verdict: {r.verdict}")
    lines += [f"  not tried: {u}" for u in r.untried]
    return "\n".join(lines) + "\n"


def render_proxy_markdown(r: ProxyResult) -> str:
    lines = [
        f"# stabdiag verify --proxy: `{r.run}`",
        "",
        f"Proxy settings: `{' '.join(r.settings)}`",
        "",
        "| remedy | changes | trouble per seed | verdict |",
        "|---|---|---|---|",
    ]
    for t in ([r.baseline] if r.baseline else []) + list(r.trials):
        rec = "/".join("-" if h is None else ("yes" if h else "no") for h in t.hits)
        lines.append(
            f"| {t.change.remedy} | {' '.join(t.change.sets) or 'none'} | {rec} | {t.verdict} |"
        )
    lines += ["", f"**Verdict:** {r.verdict}"]
    return "\n".join(lines) + "\n"
