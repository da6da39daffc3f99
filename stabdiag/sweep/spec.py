"""The sweep grid: learning rates x stabilizer settings, parsed from the command line. No torch.

A *setting* is a named set of train-config overrides (``baseline`` = none, ``qk_norm=true``,
``qk_norm=true,z_loss=1e-4``, or ``name:key=value,...`` to choose the label). Every cell of the
grid is resolved to a full ``TrainConfig`` up front, so a typo in the tenth setting fails before
the first cell trains, with the trainer's own "did you mean" message.

Seeds: every (setting, LR) point is trained with seeds base..base+N-1 (``--seeds N``; the base is
the config's ``seed``). The seed sets both the init and the data order, and seed k is the same
for every setting and LR, so per-seed LR curves are paired across settings.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stabdiag.errors import ConfigError, StabdiagError
from stabdiag.train.config import TrainConfig, resolve

BASELINE = "baseline"
# The sweep owns these keys: the grid sets lr, and every cell gets its own run directory.
OWNED_KEYS = frozenset({"lr", "out_dir", "run_name"})
# A setting may not choose its own seed: seeds are paired across settings (--set seed=BASE moves all).
SEED_KEY = "seed"
_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclass(frozen=True)
class Setting:
    """One row of the grid: a label and the `key=value` overrides it applies to every LR."""

    name: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Cell:
    """One grid cell, resolved: which setting, which LR, which seed, the exact config it trains."""

    setting: str
    lr: float
    config: TrainConfig

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def run_dir(self) -> Path:
        return Path(self.config.out_dir) / self.config.run_name


@dataclass(frozen=True)
class SweepSpec:
    """The whole grid. `cells` is setting-major, then LR ascending, then seed ascending."""

    preset: str
    recipe: str
    lrs: tuple[float, ...]
    settings: tuple[Setting, ...]
    common: tuple[str, ...]
    out_dir: Path
    cells: tuple[Cell, ...]
    seeds: tuple[int, ...] = (0,)


def parse_lrs(text: str) -> tuple[float, ...]:
    """`1e-4,1e-3,1e-2` -> sorted unique positive floats."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(
            f"--lrs {text!r}: expected comma-separated learning rates, e.g. 1e-4,1e-3,1e-2"
        ) from None
    return _check_lrs(values, f"--lrs {text!r}")


def parse_lr_range(text: str) -> tuple[float, ...]:
    """`LO:HI:N` -> N log-spaced LRs from LO to HI inclusive (the paper's grid is log-spaced)."""
    parts = text.split(":")
    try:
        lo, hi, n = float(parts[0]), float(parts[1]), int(parts[2])
        if len(parts) != 3:
            raise ValueError
    except (ValueError, IndexError):
        raise ConfigError(f"--lr-range {text!r}: expected LO:HI:N, e.g. 1e-4:1e-1:7") from None
    if not (0 < lo < hi and math.isfinite(hi)) or n < 2:
        raise ConfigError(f"--lr-range {text!r}: expected 0 < LO < HI and N >= 2")
    step = (math.log10(hi) - math.log10(lo)) / (n - 1)
    values = [float(f"{10 ** (math.log10(lo) + i * step):.6g}") for i in range(n)]
    return _check_lrs(values, f"--lr-range {text!r}")


def _check_lrs(values: Sequence[float], where: str) -> tuple[float, ...]:
    if not values:
        raise ConfigError(f"{where}: expected at least one learning rate")
    bad = [v for v in values if not (v > 0 and math.isfinite(v))]
    if bad:
        raise ConfigError(f"{where}: learning rates must be positive, got {bad[0]}")
    return tuple(sorted(set(values)))


def parse_setting(text: str) -> Setting:
    """`baseline`, `qk_norm=true`, `qk_norm=true,z_loss=1e-4` or `name:key=value,...`."""
    raw = text.strip()
    name = ""
    head, colon, rest = raw.partition(":")
    if colon and "=" not in head:  # a label before the overrides (inject specs have ':' after '=')
        name, raw = head.strip(), rest.strip()
        if not _NAME.match(name):
            raise ConfigError(
                f"--setting {text!r}: the label {name!r} may only use letters, digits and _ . + -"
            )
    if raw in ("", BASELINE):
        return Setting(name or BASELINE, ())
    items = tuple(p.strip() for p in raw.split(",") if p.strip())
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise ConfigError(
                f"--setting {text!r}: expected 'baseline' or KEY=VALUE[,KEY=VALUE...], "
                f"e.g. qk_norm=true,z_loss=1e-4; got {item!r}"
            )
        if key.strip().replace("-", "_") in OWNED_KEYS:
            raise ConfigError(f"--setting {text!r}: {key.strip()} is set by the sweep itself")
        if key.strip() == SEED_KEY:
            raise ConfigError(
                f"--setting {text!r}: seeds are shared by all settings; use --seeds N "
                "and --set seed=BASE"
            )
    return Setting(name or ",".join(items), items)


def cell_run_name(setting: str, lr: float, seed: int = 0) -> str:
    """A directory name that is stable across invocations (resume finds the cell by it)."""
    slug = re.sub(r"[^A-Za-z0-9_.+-]+", "_", setting.replace("=", "-")).strip("_") or "setting"
    return f"{slug}__lr{lr:.4g}__s{seed}"


def build_spec(
    *,
    preset: str,
    recipe: str,
    lrs: Sequence[float],
    settings: Sequence[Setting],
    common: Sequence[str],
    out_dir: str | Path,
    seeds: int = 1,
) -> SweepSpec:
    """Resolve every cell's config; raise ConfigError on anything a cell could not train with.

    `min_lr` follows the LR: each cell keeps the recipe's min_lr/lr ratio (0.1 for `stable`), so
    a cell at LR 1e-4 does not "decay" up to the recipe's absolute floor of 3e-4. An explicit
    min_lr in --set or a setting wins. `seeds` cells per (setting, LR), seeds base..base+seeds-1.
    """
    if not settings:
        raise ConfigError("--setting: expected at least one setting")
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: expected at least 1")
    names = [s.name for s in settings]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise ConfigError(f"--setting {dup!r} is given twice")
    for item in common:
        key = item.partition("=")[0].strip().replace("-", "_")
        if key in OWNED_KEYS:
            raise ConfigError(f"--set {item!r}: {key} is set by the sweep itself")
    out = Path(out_dir)
    try:
        base = resolve(preset, recipe or None, None, list(common))
    except StabdiagError as exc:
        raise ConfigError(str(exc)) from None
    ratio = base.min_lr / base.lr if base.lr > 0 else 0.1
    seed_list = tuple(range(base.seed, base.seed + seeds))
    cells = []
    for s in settings:
        explicit_min = any(
            o.partition("=")[0].strip().replace("-", "_") == "min_lr"
            for o in (*common, *s.overrides)
        )
        for lr in lrs:
            for seed in seed_list:
                grid = [
                    f"lr={lr!r}",
                    f"out_dir={out}",
                    f"seed={seed}",
                    f"run_name={cell_run_name(s.name, lr, seed)}",
                ]
                if not explicit_min:
                    grid.append(f"min_lr={lr * ratio!r}")
                try:
                    cfg = resolve(preset, recipe or None, None, [*common, *s.overrides, *grid])
                except StabdiagError as exc:
                    raise ConfigError(f"--setting {s.name!r}: {exc}") from None
                cells.append(Cell(s.name, lr, cfg))
    dirs = [c.config.run_name for c in cells]
    clash = next((d for d in dirs if dirs.count(d) > 1), None)
    if clash:
        raise ConfigError(
            f"--setting: two settings map to the same run directory {clash!r}; "
            "give one a label (NAME:KEY=VALUE,...)"
        )
    return SweepSpec(
        preset=preset,
        recipe=recipe,
        lrs=tuple(lrs),
        settings=tuple(settings),
        common=tuple(common),
        out_dir=out,
        cells=tuple(cells),
        seeds=seed_list,
    )
