"""The library's front door: ``analyze`` and ``load`` for notebooks, scripts and the CLI alike.

The CLI is a shell over these functions, so a report from ``stabdiag analyze runs/`` and one from
``stabdiag.analyze("runs/")`` in the same directory are the same report: the policy file is found
and applied here (map, select/ignore, thresholds, per-run overrides), not in the command.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from stabdiag import words
from stabdiag.errors import ConfigError, SourceError

if TYPE_CHECKING:  # pandas is heavy: imported only when a frame is actually analysed
    import pandas as pd

    from stabdiag.policy import Policy
    from stabdiag.report import Report
    from stabdiag.sources import LoadResult, RunInfo
    from stabdiag.table import MetricsTable

    Source = str | os.PathLike | Sequence[str | os.PathLike] | pd.DataFrame
    """What ``analyze`` and ``load`` read: a path, several paths, or a long DataFrame."""

FRAME_PATH = "<DataFrame>"
"""``RunSummary.path`` of a run that came from an in-memory DataFrame."""
FRAME_FORMAT = "dataframe"
FRAME_COLUMNS = ("run", "step", "metric", "value")


def resolve_policy(
    policy: Policy | str | os.PathLike | None = None,
    *,
    select: Sequence[str] | str | None = None,
    ignore: Sequence[str] | str | None = None,
    map: Mapping[str, str] | None = None,  # noqa: A002 - the documented keyword, as in --map
    fail_on: str | None = None,
    start: str | os.PathLike = ".",
) -> Policy:
    """The effective policy: ``policy`` (a Policy, or a policy file's path; None = the nearest
    ``stabdiag.toml`` / ``pyproject.toml [tool.stabdiag]`` from ``start`` upwards, as the CLI
    finds it) with the given arguments on top, exactly as command-line flags go on top of the
    file. Every selected or ignored kind must exist: a typo must not silently select nothing."""
    from stabdiag.policy import Policy, load_policy
    from stabdiag.textfmt import parse_fail_on

    if fail_on is not None:
        parse_fail_on(fail_on, "fail_on")
    base = policy if isinstance(policy, Policy) else load_policy(policy, start=start)
    pol = base.with_flags(select=_names(select), ignore=_names(ignore), fail_on=fail_on, map=map)
    check_kinds([*(pol.select or ()), *pol.ignore])
    check_map_targets(pol.map)
    return pol


def check_map_targets(mapping: Mapping[str, str]) -> None:
    """Raise ConfigError when a map's canonical side is not a canonical metric name
    (``train_loss=loss`` instead of ``train/loss=loss``): it would silently map to nothing."""
    from stabdiag.table import CANONICAL, CANONICAL_PREFIXES, is_canonical

    for canon in mapping:
        if not (is_canonical(canon) or canon.startswith("rl/")):
            known = (
                ", ".join(CANONICAL) + ", " + ", ".join(p + "<name>" for p in CANONICAL_PREFIXES)
            )
            raise ConfigError(
                f"map {canon}={mapping[canon]}: {canon!r} is not a canonical metric; "
                f"expected CANONICAL=SERIES with CANONICAL one of {known}"
            )


def check_map_series(mapping: Mapping[str, str], report: Report) -> None:
    """Raise ConfigError when a mapped series exists in no run: the map would be silently
    ignored and a run could be called healthy on the wrong series."""
    found = {raw for r in report.runs for raw, _, _ in r.mapping}
    for canon, raw in mapping.items():
        if raw not in found:
            seen = ", ".join(sorted(found)[:20]) + (" ..." if len(found) > 20 else "")
            raise ConfigError(
                f"map {canon}={raw}: no run has a series named {raw!r}; "
                f"series found: {seen or 'none'} (`stabdiag series PATH` lists them)"
            )


def check_kinds(names: Sequence[str]) -> None:
    """Raise ConfigError for the first name that is no detector's kind or code."""
    from stabdiag.detectors import by_kind

    for k in names:
        try:
            by_kind(k)
        except KeyError:
            raise ConfigError(
                f"unknown kind or code {k!r}; `stabdiag explain --list` lists them"
            ) from None


def analyze(
    source: Source,
    *,
    policy: Policy | str | os.PathLike | None = None,
    select: Sequence[str] | str | None = None,
    ignore: Sequence[str] | str | None = None,
    map: Mapping[str, str] | None = None,  # noqa: A002 - the documented keyword, as in --map
    fail_on: str | None = None,
    jobs: int | None = 1,
    cache: bool = True,
    input_format: str | None = None,
) -> Report:
    """Analyse training logs and return the ``Report`` (findings, skips, ranked remedies).

    ``source``: a log file or directory (``str`` or ``Path``), a sequence of them, or a long
    pandas DataFrame with columns ``run, step, metric, value`` (optional ``wall_time``, ``rank``)
    whose metric names are mapped to canonical ones like any log's. ``policy``: a ``Policy`` or a
    policy file's path; None finds the policy file as the CLI does. ``select``/``ignore``/
    ``map``/``fail_on`` go on top of it like the CLI's flags. ``jobs``: worker processes for many
    runs (1 = none, None = ``$STABDIAG_JOBS`` or every CPU). ``cache``: False re-parses every
    log. ``input_format`` forces a reader (``stabdiag formats``). ``report.failing()`` lists
    the findings at or above the effective ``fail-on``. Raises ``StabdiagError`` subclasses."""
    import dataclasses

    pol = resolve_policy(policy, select=select, ignore=ignore, map=map, fail_on=fail_on)
    sel = list(pol.select) if pol.select else None
    ign = list(pol.ignore) or None
    configs = pol.detector_configs()
    if _is_frame(source):
        from stabdiag.diagnose import _pool, analyze_table

        table, runs = frame_table(source, overrides=pol.map)
        with _pool(jobs) as pool:
            report = analyze_table(table, runs, select=sel, ignore=ign, configs=configs, pool=pool)
    else:
        from stabdiag.diagnose import diagnose

        report = diagnose(
            _paths(source),
            fmt=input_format,
            overrides=dict(pol.map),
            select=sel,
            ignore=ign,
            configs=configs,
            jobs=jobs,
            cache=cache,
        )
    check_map_series(pol.map, report)
    return dataclasses.replace(pol.apply(report), policy=pol)


def load(
    source: Source,
    *,
    map: Mapping[str, str] | None = None,  # noqa: A002 - the documented keyword, as in --map
    policy: Policy | str | os.PathLike | None = None,
    jobs: int | None = 1,
    cache: bool = True,
    input_format: str | None = None,
) -> MetricsTable:
    """Read logs into one long ``MetricsTable`` (canonical metric names, no detection): the
    table ``analyze`` would judge. The policy file's ``[map]`` applies as in ``analyze``."""
    return load_runs(
        source, map=map, policy=policy, jobs=jobs, cache=cache, input_format=input_format
    ).table


def load_runs(
    source: Source,
    *,
    map: Mapping[str, str] | None = None,  # noqa: A002 - the documented keyword, as in --map
    policy: Policy | str | os.PathLike | None = None,
    jobs: int | None = 1,
    cache: bool = True,
    input_format: str | None = None,
) -> LoadResult:
    """``load`` with what was learnt while reading: each run's ``RunInfo`` (format, path, which
    series was taken as which canonical metric and why) and the inputs that could not be read
    (``errors``). ``stabdiag series`` lists these."""
    from stabdiag.sources import LoadResult

    pol = resolve_policy(policy, map=map)
    if _is_frame(source):
        table, runs = frame_table(source, overrides=pol.map)
        return LoadResult(table=table, runs=tuple(runs), errors=())
    from stabdiag import sources
    from stabdiag.diagnose import _pool

    with _pool(jobs) as pool:
        return sources.load(
            _paths(source), fmt=input_format, overrides=dict(pol.map), pool=pool, cache=cache
        )


def frame_table(
    frame: pd.DataFrame, *, overrides: Mapping[str, str] | None = None
) -> tuple[MetricsTable, list[RunInfo]]:
    """A long DataFrame as the reader layer would have produced it: one run per ``run`` value
    (first-seen order), metric names mapped to canonical ones (aliases.py, ``overrides`` first),
    rows kept in write order so a repeated step's later value wins."""
    import numpy as np
    import pandas as pd

    from stabdiag.safetext import printable
    from stabdiag.sources import RunInfo, aliases
    from stabdiag.table import MetricsTable

    missing = [c for c in FRAME_COLUMNS if c not in frame.columns]
    if missing:
        raise SourceError(
            FRAME_PATH,
            f"a long table with columns {', '.join(FRAME_COLUMNS)}[, wall_time, rank]",
            f"columns {list(map(str, frame.columns))[:20]}",
        )
    step = pd.to_numeric(frame["step"], errors="coerce")
    value = pd.to_numeric(frame["value"], errors="coerce")
    # A NaN value is evidence (a diverged loss); a value that is not a number at all is damage.
    ok = (
        step.notna()
        & np.isfinite(step)
        & (step == np.floor(step))
        & frame["run"].notna()
        & frame["metric"].notna()
        & ~(value.isna() & frame["value"].notna())
    )
    bad = int((~ok).sum())
    f = pd.DataFrame(
        {
            "run": frame["run"].astype(str).map(printable),
            "step": step.where(ok, 0).astype(np.int64),
            "metric": frame["metric"].astype(str),
            "value": value.astype(np.float64),
            "wall_time": (
                pd.to_numeric(frame["wall_time"], errors="coerce").astype(np.float64)
                if "wall_time" in frame.columns
                else np.nan
            ),
            "source": FRAME_PATH,
        }
    )
    if "rank" in frame.columns:
        f["rank"] = pd.to_numeric(frame["rank"], errors="coerce")
    f = f[ok.to_numpy()]
    if not len(f):
        raise SourceError(
            FRAME_PATH,
            "rows with a run, an integer step, a metric and a numeric value",
            "no such row" if len(frame) else "an empty table",
        )
    warn = (
        (
            f"{FRAME_PATH}: {words.count(bad, 'row')} without a run, a metric, an integer step or a numeric value dropped",
        )
        if bad
        else ()
    )
    runs, parts = [], []
    for name, g in f.groupby("run", sort=False):
        raw_names = list(dict.fromkeys(g["metric"].tolist()))
        matches = aliases.resolve(raw_names, None, overrides)
        g = g.assign(metric=g["metric"].map({n: printable(matches[n].name) for n in raw_names}))
        parts.append(MetricsTable(g))
        mapping = tuple(
            (printable(n), printable(matches[n].name), printable(matches[n].why)) for n in raw_names
        )
        runs.append(
            RunInfo(
                name=str(name), path=FRAME_PATH, format=FRAME_FORMAT, warnings=warn, mapping=mapping
            )
        )
    return MetricsTable.concat(parts), runs


def _is_frame(source: object) -> bool:
    mod = type(source).__module__
    return mod.startswith("pandas") and type(source).__name__ == "DataFrame"


def _paths(source: object) -> list[Path]:
    """A path or a sequence of paths; a plain string is one path, never a sequence of letters."""
    if isinstance(source, str | os.PathLike):
        return [Path(source)]
    if (
        isinstance(source, Sequence)
        and source
        and all(isinstance(p, str | os.PathLike) for p in source)
    ):
        return [Path(p) for p in source]
    raise ConfigError(
        f"source: expected a log path, a list of paths or a pandas DataFrame, "
        f"found {type(source).__name__}" + (" (empty)" if isinstance(source, Sequence) else "")
    )


def _names(value: Sequence[str] | str | None) -> list[str] | None:
    """'a,b' or ['a', 'b,c'] -> ['a', 'b', 'c'], as the CLI splits its repeatable flags."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    return [v.strip() for item in items for v in str(item).split(",") if v.strip()] or None
