"""Labelled detection corpus, generated deterministically from integer seeds.

Every case is a ``RunData`` plus exact labels. Curves are decaying power laws
``c + a (1 + t/T)^-b`` with multiplicative noise (Gaussian, Student-t with 10 degrees of freedom
for heavy tails, or AR(1) for correlated noise) at a relative level from smooth (0.3 %) to very
noisy (6 %), logged every step, every 10 or every 100 steps. Grad norms decay from their init
level with log-normal noise. Events are injected on top at log-point resolution (an event lasting
less than one log interval is one log point), so the label is what the log can show.

Event sizes: loss spikes are drawn log-uniformly between a floor and 100x the local level, grad
spikes between a floor and 1000x. The floor is max(1.2, exp(``SEPARATION`` x noise sigma)) for
the loss (max(3, ...) for grad norms): an "event" inside the noise band of its own curve is noise,
not an event, and no detector can be asked to find it.

Classes (the ``cls`` of a label): ``loss_spike`` (recovering after 1-300 steps, or not),
``grad_spike`` (1-3 log points, with or without a loss response), ``grad_explosion``
(exponential growth), ``fp16`` (a scale collapse or a burst of overflow skips; the benign
start-up scale search and isolated skips are clean), ``divergence`` (slow rise that stays),
``stall`` (the loss goes flat early: at a chance level, grad norm collapsing).

Seeds: even seeds are the development half, odd seeds the held-out half (evaluate only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from stabdiag.table import GRAD_NORM, LOSS_SCALE, LR, SKIPPED_STEP, TRAIN_LOSS, RunData, Series

SEPARATION = 10.0  # event floor in noise sigmas (log scale)
CLASSES = ("loss_spike", "grad_spike", "grad_explosion", "fp16", "divergence", "stall")


@dataclass(frozen=True)
class Label:
    cls: str
    start: int  # first step of the event
    end: int  # last step of the event (inclusive)
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    name: str
    family: str
    seed: int
    run: RunData
    labels: tuple[Label, ...]
    interval: int
    kinds: tuple[str, ...] | None = None  # detector kinds that may judge it (None = all)

    @property
    def n_steps(self) -> int:
        s = self.run.get(TRAIN_LOSS) or self.run.get(GRAD_NORM) or self.run.get(LOSS_SCALE)
        return 0 if s is None else int(s.steps[-1] - s.steps[0] + self.interval)


def split_of(seed: int) -> str:
    return "dev" if seed % 2 == 0 else "heldout"


# ---------------------------------------------------------------------------------------------
# Clean curves


@dataclass
class _Curve:
    steps: np.ndarray
    level: np.ndarray  # noiseless loss level
    noise: np.ndarray  # log-scale noise added to the loss
    sigma: float  # robust sigma of the loss noise (log scale)
    g_level: np.ndarray
    g_noise: np.ndarray
    g_sigma: float
    interval: int
    lr: np.ndarray
    kind: str
    g_kind: str


def _noise(rng: np.random.Generator, n: int, sigma: float, kind: str) -> np.ndarray:
    if kind == "heavy":  # Student-t(10), scaled so its MAD-sigma (1.4826 MAD) is sigma
        e = rng.standard_t(10, n) / (0.6998 * 1.4826)
    elif kind == "ar1":  # correlated noise: AR(1) with rho 0.8, unit marginal sigma
        w = rng.standard_normal(n) * math.sqrt(1 - 0.64)
        e = np.empty(n)
        e[0] = rng.standard_normal()
        for i in range(1, n):  # n <= ~5000: cheap; corpus generation only, never a detector
            e[i] = 0.8 * e[i - 1] + w[i]
    else:
        e = rng.standard_normal(n)
    return sigma * e


def _curve(rng: np.random.Generator, interval: int | None = None, n: int | None = None) -> _Curve:
    if interval is None:
        interval = int(rng.choice([1, 10, 100], p=[0.6, 0.25, 0.15]))
    if n is None:
        n = int(
            {1: rng.integers(1500, 4000), 10: rng.integers(800, 2500), 100: rng.integers(200, 600)}[
                interval
            ]
        )
    steps = (np.arange(n, dtype=np.int64) + 1) * interval
    t = steps.astype(np.float64)
    total = float(t[-1])
    a, b, c = rng.uniform(2.0, 8.0), rng.uniform(0.3, 0.8), rng.uniform(1.5, 3.5)
    tscale = total * rng.uniform(0.005, 0.05)
    level = c + a * (1.0 + t / tscale) ** -b
    sigma = float(rng.choice([0.003, 0.01, 0.02, 0.04, 0.06]))
    kind = str(rng.choice(["gauss", "heavy", "ar1"], p=[0.5, 0.3, 0.2]))
    noise = _noise(rng, n, sigma, kind)
    g0, g_end = rng.uniform(2.0, 20.0), rng.uniform(0.2, 2.0)
    g_level = g_end + (g0 - g_end) * np.exp(-t / (total * rng.uniform(0.01, 0.1)))
    g_sigma = float(rng.choice([0.05, 0.1, 0.2]))
    g_kind = "heavy" if rng.random() < 0.3 else "gauss"
    g_noise = _noise(rng, n, g_sigma, g_kind)
    warm = max(1.0, total * 0.02)
    lr = 3e-4 * np.minimum(1.0, t / warm) * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * t / total)))
    return _Curve(steps, level, noise, sigma, g_level, g_noise, g_sigma, interval, lr, kind, g_kind)


def _run(
    name: str,
    cv: _Curve,
    loss_mult: np.ndarray | None = None,
    g_mult: np.ndarray | None = None,
    extra: dict[str, Series] | None = None,
    loss_override: np.ndarray | None = None,
) -> RunData:
    loss = cv.level * np.exp(cv.noise)
    if loss_mult is not None:
        loss = loss * loss_mult
    if loss_override is not None:
        loss = np.where(np.isnan(loss_override), loss, loss_override)
    g = cv.g_level * np.exp(cv.g_noise)
    if g_mult is not None:
        g = g * g_mult
    series = {
        TRAIN_LOSS: Series(cv.steps, loss),
        GRAD_NORM: Series(cv.steps, g),
        LR: Series(cv.steps, cv.lr),
    }
    series.update(extra or {})
    return RunData(
        name=name,
        series=series,
        meta={
            "noise_sigma": cv.sigma,
            "grad_sigma": cv.g_sigma,
            "noise": cv.kind,
            "grad_noise": cv.g_kind,
        },
    )


def _size(rng: np.random.Generator, sigma: float, lo: float, hi: float) -> float:
    floor = max(lo, math.exp(SEPARATION * sigma))
    return float(math.exp(rng.uniform(math.log(floor), math.log(hi))))


def _onset(rng: np.random.Generator, n: int, lo_frac: float = 0.1, hi_frac: float = 0.85) -> int:
    if rng.random() < 0.15:  # early events: where warm-up-bound rules are blind
        return int(rng.integers(10, max(11, min(100, n // 5))))
    return int(rng.integers(int(lo_frac * n), int(hi_frac * n)))


# ---------------------------------------------------------------------------------------------
# Families


def _clean(rng, seed, tag="clean"):
    cv = _curve(rng)
    return Case(f"{tag}-{seed}", "clean", seed, _run(f"{tag}-{seed}", cv), (), cv.interval)


def _loss_spikes(rng, seed, recover: bool):
    cv = _curve(rng)
    n, iv = len(cv.steps), cv.interval
    mult = np.ones(n)
    labels = []
    k = int(rng.integers(1, 4)) if recover else 1
    taken = np.zeros(n, dtype=bool)
    for _ in range(k):
        on = _onset(rng, n)
        m = _size(rng, cv.sigma, 1.2, 100.0)
        ramp = int(rng.choice([0, 0, 0, 1, 2, 3]))
        if recover:
            dur_steps = math.exp(rng.uniform(0, math.log(300)))
            d = max(1, int(round(dur_steps / iv)))
            end = min(n - 1, on + ramp + d - 1)
        else:
            end = n - 1
        if taken[max(0, on - 60) : min(n, end + 60)].any():
            continue
        taken[on : end + 1] = True
        prof = np.zeros(n)
        idx = np.arange(n)
        if ramp:
            prof[on : on + ramp] = np.linspace(
                1.0 / (ramp + 1), ramp / (ramp + 1), ramp
            ) * math.log(m)
        pk = on + ramp
        if recover:
            tt = idx[pk : end + 1] - pk
            prof[pk : end + 1] = math.log(m) * (1.0 - tt / (end - pk + 1))
        else:
            stay = 1.0 + (m - 1.0) * rng.uniform(0.3, 1.0)
            settle = max(1, int(rng.integers(1, 50)))
            tt = idx[pk:] - pk
            prof[pk:] = math.log(stay) + (math.log(m) - math.log(stay)) * np.exp(-tt / settle)
        mult *= np.exp(prof)
        labels.append(
            Label(
                "loss_spike",
                int(cv.steps[on]),
                int(cv.steps[end]),
                {"ratio": m, "recovers": recover, "points": end - on + 1},
            )
        )
    fam = "loss_spike" if recover else "loss_spike_nonrecovering"
    name = f"{fam}-{seed}"
    return Case(name, fam, seed, _run(name, cv, loss_mult=mult), tuple(labels), iv)


def _grad_spikes(rng, seed, loss_response: bool):
    cv = _curve(rng)
    n, iv = len(cv.steps), cv.interval
    gm, lm = np.ones(n), np.ones(n)
    labels = []
    last = -(10**9)
    for on in sorted(_onset(rng, n) for _ in range(int(rng.integers(1, 5)))):
        if on - last < 30:
            continue
        last = on
        k = int(rng.choice([1, 1, 1, 2, 3]))
        m = _size(rng, cv.g_sigma, 3.0, 1000.0)
        gm[on : on + k] *= m
        if loss_response:
            lm[on : on + k + 1] *= 1.0 + rng.uniform(0.05, 0.6)
        labels.append(
            Label(
                "grad_spike",
                int(cv.steps[on]),
                int(cv.steps[min(n - 1, on + k - 1)]),
                {"ratio": m, "points": k, "loss_response": loss_response},
            )
        )
    fam = "grad_spike_loss" if loss_response else "grad_spike"
    name = f"{fam}-{seed}"
    return Case(name, fam, seed, _run(name, cv, loss_mult=lm, g_mult=gm), tuple(labels), iv)


def _grad_explosion(rng, seed):
    """Exponential growth (e-folding 3-60 log points) up to 20x-1e5x, or a step up of 20x-1e3x
    that stays; the loss follows after a lag."""
    cv = _curve(rng)
    n, iv = len(cv.steps), cv.interval
    on = int(rng.integers(int(0.3 * n), int(0.85 * n)))
    idx = np.arange(n)
    if rng.random() < 0.7:
        top = math.exp(rng.uniform(math.log(20), math.log(1e5)))
        tau = math.exp(rng.uniform(math.log(3), math.log(60)))  # e-folding, log points
        grow = np.where(idx >= on, np.minimum((idx - on) / tau, math.log(top)), 0.0)
        shape = "exponential"
    else:
        top, tau = math.exp(rng.uniform(math.log(20), math.log(1e3))), 0.0
        grow = np.where(idx >= on, math.log(top), 0.0)
        shape = "step"
    gm = np.exp(grow)
    lag = int(rng.integers(5, 50))
    lgrow = np.where(
        idx >= on + lag,
        np.minimum((idx - on - lag) / (max(tau, 3) * 4), math.log(rng.uniform(1.5, 4))),
        0.0,
    )
    name = f"grad_explosion-{seed}"
    lab = Label(
        "grad_explosion",
        int(cv.steps[on]),
        int(cv.steps[-1]),
        {"tau_points": tau, "growth": top, "shape": shape},
    )
    return Case(
        name, "grad_explosion", seed, _run(name, cv, loss_mult=np.exp(lgrow), g_mult=gm), (lab,), iv
    )


def _divergence(rng, seed):
    cv = _curve(rng)
    n, iv = len(cv.steps), cv.interval
    on = int(rng.integers(int(0.2 * n), int(0.8 * n)))
    top = rng.uniform(1.3, 4.0)
    span = max(5, int(rng.uniform(0.05, 0.3) * n))
    idx = np.arange(n)
    prof = np.clip((idx - on) / span, 0.0, 1.0) * math.log(top)
    # the floor: a divergence smaller than the noise is not one
    if math.log(top) < SEPARATION * cv.sigma:
        prof *= SEPARATION * cv.sigma / math.log(top)
    name = f"divergence-{seed}"
    gm = np.exp(prof * rng.uniform(0.0, 1.5))
    lab = Label(
        "divergence", int(cv.steps[on]), int(cv.steps[-1]), {"ratio": float(np.exp(prof[-1]))}
    )
    return Case(
        name, "divergence", seed, _run(name, cv, loss_mult=np.exp(prof), g_mult=gm), (lab,), iv
    )


def _stall(rng, seed):
    cv = _curve(rng)
    n, iv = len(cv.steps), cv.interval
    on = int(rng.integers(int(0.05 * n), int(0.3 * n)))
    chance = rng.random() < 0.6
    lvl = math.log(float(rng.choice([2, 3, 10, 50257, 32000]))) if chance else float(cv.level[on])
    if chance:  # the curve must still be above the chance level where it stalls
        lvl = max(lvl, 1.0)
        scale = (lvl * 1.3) / cv.level[0]
        cv.level = cv.level * max(scale, 1.0)
        cv.level[on:] = lvl
    else:
        cv.level[on:] = lvl
    cv.noise[on:] *= rng.uniform(0.05, 0.3)
    g = np.ones(n)
    g[on:] = np.exp(
        -np.minimum(np.arange(n - on) / max(2, 0.02 * n), math.log(rng.uniform(20, 200)))
    )
    name = f"stall-{seed}"
    lab = Label("stall", int(cv.steps[on]), int(cv.steps[-1]), {"chance": chance})
    return Case(name, "stall", seed, _run(name, cv, g_mult=g), (lab,), iv)


def _scaler(rng, n: int, growth: int) -> tuple[np.ndarray, np.ndarray]:
    """Dynamic loss scale (log2) and skipped flags for a benign fp16 run: start-up search from
    2^16 or 2^32 down to a working scale, then growth every ``growth`` clean steps with the
    occasional probe that overflows and halves (benign), plus a few isolated skips."""
    start = int(rng.choice([16, 32]))
    work = int(rng.integers(8, 14))
    log2 = np.empty(n)
    skip = np.zeros(n)
    s, clean = start, 0
    search = start - work
    isolated = set(int(i) for i in rng.integers(100, n, int(rng.integers(0, 4))))
    for i in range(n):  # generation only: a scaler is a state machine
        if i < search or (s > work + 1) or i in isolated:
            s -= 1
            skip[i] = 1
            clean = 0
        else:
            clean += 1
            if clean >= growth:
                s += 1
                clean = 0
        log2[i] = s
    return log2, skip


def _fp16(rng, seed, pattern: str):
    cv = _curve(rng, interval=1, n=int(rng.integers(2500, 6000)))
    n = len(cv.steps)
    log2, skip = _scaler(rng, n, int(rng.choice([1000, 2000])))
    labels = []
    if pattern == "collapse":
        on = int(rng.integers(int(0.2 * n), int(0.8 * n)))
        every = int(rng.integers(1, 8))
        drops = np.zeros(n)
        drops[on::every] = 1
        end = min(n - 1, on + every * int(log2[on] + 2))
        drops[end + 1 :] = 0
        skip = np.maximum(skip, drops)
        log2 = log2 - np.cumsum(drops)
        log2 = np.maximum(log2, 0.0)
        labels.append(Label("fp16", int(cv.steps[on]), int(cv.steps[-1]), {"pattern": pattern}))
    elif pattern == "burst":
        on = int(rng.integers(int(0.2 * n), int(0.8 * n)))
        k = int(rng.integers(5, 15))
        width = int(rng.integers(k, 200))
        hits = np.sort(
            rng.choice(np.arange(on, min(n, on + width)), size=min(k, width), replace=False)
        )
        hits[0] = on
        drops = np.zeros(n)
        drops[hits] = 1
        skip = np.maximum(skip, drops)
        log2 = log2 - np.cumsum(drops)
        labels.append(
            Label("fp16", int(cv.steps[on]), int(cv.steps[int(hits[-1])]), {"pattern": pattern})
        )
    extra = {LOSS_SCALE: Series(cv.steps, 2.0**log2), SKIPPED_STEP: Series(cv.steps, skip)}
    if rng.random() < 0.5:  # many logs carry only the scale, not the skip flag
        extra.pop(SKIPPED_STEP)
    fam = f"fp16_{pattern}"
    name = f"{fam}-{seed}"
    return Case(name, fam, seed, _run(name, cv, extra=extra), tuple(labels), 1)


def cases_for_seed(seed: int) -> list[Case]:
    """Every family once, each from its own sub-seed (adding a family never changes the others)."""
    makers = [
        ("clean", _clean),
        ("clean2", lambda r, s: _clean(r, s, "clean2")),
        ("loss_spike", lambda r, s: _loss_spikes(r, s, True)),
        ("loss_spike_nr", lambda r, s: _loss_spikes(r, s, False)),
        ("grad_spike", lambda r, s: _grad_spikes(r, s, False)),
        ("grad_spike_loss", lambda r, s: _grad_spikes(r, s, True)),
        ("grad_explosion", _grad_explosion),
        ("divergence", _divergence),
        ("stall", _stall),
        ("fp16_benign", lambda r, s: _fp16(r, s, "benign")),
        ("fp16_collapse", lambda r, s: _fp16(r, s, "collapse")),
        ("fp16_burst", lambda r, s: _fp16(r, s, "burst")),
    ]
    out = []
    for j, (_tag, make) in enumerate(makers):
        rng = np.random.default_rng([seed, j, 20261122])
        out.append(make(rng, seed))
    return out


def synthetic(seeds) -> list[Case]:
    return [c for s in seeds for c in cases_for_seed(int(s))]


# Clean real logs for false-alarm rates (folder, kinds it may judge: llm.c has real grad spikes).
REAL_CLEAN = (
    ("tb_hf_trainer_hslu", None),
    ("hf_trainer_state_trl_sft", None),
    ("lightning_csv_slm", None),
    ("llmc_modded_nanogpt", ("loss-spike", "divergence", "stall")),
    ("wandb_export_csv", None),
)


def real_clean(root) -> list[Case]:
    """The clean real logs under ``root`` (missing folders are left out)."""
    from pathlib import Path

    from stabdiag import sources
    from stabdiag.detectors._stats import log_interval

    out = []
    for folder, kinds in REAL_CLEAN:
        p = Path(root) / folder
        if not p.exists():
            continue
        res = sources.load([p])
        for name in res.table.runs():
            rd = res.table.run_data(name)
            s = rd.get(TRAIN_LOSS)
            if s is None or len(s) < 30:
                continue
            out.append(
                Case(
                    f"real:{folder}:{name}", "real_clean", -1, rd, (), log_interval(s.steps), kinds
                )
            )
    return out


# ---------------------------------------------------------------------------------------------
# Real events from `stabdiag train --inject` (tiny preset, CPU; ~1 min per run, so cached)


def _train_spec(seed: int) -> tuple[list[str], list[Label]]:
    """Overrides and labels of the trained run for ``seed``: an LR spike and a bad batch.

    Labels come from the injection: an LR spike at S changes the update of step S, so the loss
    responds from S + 1 and takes tens of steps to recover (label S..S+steps+50); a bad batch at S
    is a one-step loss and grad-norm spike at S.
    """
    s_lr = 120 + 15 * seed
    factor, k = (20, 2) if seed % 2 == 0 else (30, 3)
    s_bad = 290 + 7 * seed
    over = [
        f"seed={seed}",
        "steps=400",
        "log_interval=1",
        "eval_interval=1000",
        "checkpoint_interval=0",
        f"inject=lr_spike@{s_lr}:factor={factor},steps={k}",
        f"inject=bad_batch@{s_bad}",
    ]
    labels = [
        Label("loss_spike", s_lr, s_lr + k + 50, {"injected": f"lr_spike x{factor}"}),
        Label("loss_spike", s_bad, s_bad + 2, {"injected": "bad_batch"}),
        Label("grad_spike", s_bad, s_bad, {"injected": "bad_batch"}),
    ]
    return over, labels


def trained(seeds, cache_dir, make: bool = False) -> list[Case]:
    """Trained runs with injected events, read from ``cache_dir/train-<seed>`` (made first when
    ``make`` and torch is installed; missing runs are left out)."""
    from pathlib import Path

    from stabdiag import sources

    out = []
    for seed in seeds:
        over, labels = _train_spec(int(seed))
        d = Path(cache_dir) / f"train-{seed}"
        if not (d / "metrics.csv").exists():
            if not make:
                continue
            from stabdiag.train import resolve, train

            train(
                resolve(
                    "tiny",
                    "stable",
                    overrides=[*over, f"out_dir={cache_dir}", f"run_name=train-{seed}"],
                )
            )
        res = sources.load([d])
        rd = res.table.run_data(res.table.runs()[0])
        out.append(Case(f"train-{seed}", "trained", int(seed), rd, tuple(labels), 1))
    return out
