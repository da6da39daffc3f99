"""A team's stability policy in a file: ``[tool.stabdiag]`` in pyproject.toml or ``stabdiag.toml``.

Keys (``stabdiag.toml`` holds the same keys at its top level)::

    [tool.stabdiag]
    select  = ["loss-spike", "SD201"]     # only these kinds/codes (default: all)
    ignore  = ["lr-schedule"]             # never these
    fail-on = "warning"                   # info | warning | error | never (default: error)

    [tool.stabdiag.map]                   # canonical metric = the series your logs call it
    "train/loss" = "my_loss_tag"

    [tool.stabdiag.detectors.loss-spike]  # per-detector thresholds (kind or code), fields of
    z_threshold = 8.0                     # the detector module's Config dataclass

    [tool.stabdiag.per-run."smoke-*"]     # overrides for runs whose name matches the glob
    ignore  = ["stall"]
    fail-on = "never"

Command-line flags override the file. Unknown keys raise ``ConfigError`` listing the known ones:
a typo in a CI policy must not silently turn a check off.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stabdiag import words
from stabdiag.errors import ConfigError
from stabdiag.findings import Finding
from stabdiag.report import Report
from stabdiag.textfmt import parse_fail_on

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

TOP_KEYS = ("select", "ignore", "fail-on", "map", "detectors", "per-run")
RUN_KEYS = ("select", "ignore", "fail-on")


@dataclass(frozen=True, kw_only=True)
class RunOverride:
    """Settings for runs whose name matches ``pattern`` (fnmatch glob); unset fields inherit."""

    pattern: str
    select: tuple[str, ...] | None = None
    ignore: tuple[str, ...] | None = None
    fail_on: str | None = None


@dataclass(frozen=True, kw_only=True)
class Policy:
    """The effective policy: file settings with command-line flags applied on top."""

    select: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    fail_on: str = "error"
    map: Mapping[str, str] = field(default_factory=dict)
    detectors: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    per_run: tuple[RunOverride, ...] = ()
    source: str | None = None
    """The file it came from, for messages (None: defaults only)."""

    def with_flags(
        self,
        *,
        select: Sequence[str] | None = None,
        ignore: Sequence[str] | None = None,
        fail_on: str | None = None,
        map: Mapping[str, str] | None = None,
    ) -> Policy:
        """Flags win over the file: a given flag replaces the file's value (``--map`` merges by key)."""
        if fail_on is not None:
            parse_fail_on(fail_on, "--fail-on")
        return dataclasses.replace(
            self,
            select=tuple(select) if select else self.select,
            ignore=tuple(ignore) if ignore else self.ignore,
            fail_on=fail_on or self.fail_on,
            map={**self.map, **(map or {})},
        )

    def for_run(self, run: str) -> Policy:
        """This policy with every matching per-run override applied in file order."""
        p = self
        for o in self.per_run:
            if fnmatch.fnmatchcase(run, o.pattern):
                p = dataclasses.replace(
                    p,
                    select=o.select if o.select is not None else p.select,
                    ignore=o.ignore if o.ignore is not None else p.ignore,
                    fail_on=o.fail_on or p.fail_on,
                )
        return p

    def keeps(self, f: Finding | Any) -> bool:
        """Whether a finding or skip (anything with ``kind`` and ``code``) passes select/ignore."""
        names = {f.kind, f.code.lower(), f.code.upper()}
        if self.select is not None and not names & set(self.select):
            return False
        return not names & set(self.ignore)

    def apply(self, report: Report) -> Report:
        """The report with per-run select/ignore applied (global ones are applied by detection)."""
        if not self.per_run:
            return report
        return dataclasses.replace(
            report,
            findings=tuple(f for f in report.findings if self.for_run(f.run).keeps(f)),
            skipped=tuple(s for s in report.skipped if self.for_run(s.run).keeps(s)),
        )

    def failing(self, report: Report) -> list[Finding]:
        """Findings at or above their run's ``fail-on``: exit 1 when this is non-empty."""
        out = []
        for f in report.findings:
            level = parse_fail_on(self.for_run(f.run).fail_on)
            if level is not None and f.severity >= level:
                out.append(f)
        return out

    def detector_configs(self) -> dict[str, Any]:
        """kind -> the detector module's ``Config`` with this policy's thresholds applied."""
        out = {}
        for kind, values in self.detectors.items():
            cls = _config_class(kind)
            out[kind] = dataclasses.replace(cls(), **values)
        return out


# --- loading ---------------------------------------------------------------------------------


def find_config(start: str | Path = ".") -> Path | None:
    """The nearest ``stabdiag.toml``, or ``pyproject.toml`` with ``[tool.stabdiag]``, upwards."""
    here = Path(start).resolve()
    for d in (here, *here.parents):
        if (d / "stabdiag.toml").is_file():
            return d / "stabdiag.toml"
        pp = d / "pyproject.toml"
        if pp.is_file():
            try:
                data = tomllib.loads(pp.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
                continue
            if "stabdiag" in data.get("tool", {}):
                return pp
    return None


def load_policy(path: str | Path | None = None, *, start: str | Path = ".") -> Policy:
    """Read the policy from ``path`` or the nearest config file; defaults when there is none."""
    p = Path(path) if path is not None else find_config(start)
    if p is None:
        return Policy()
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the config file ({e.strerror or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: expected TOML, found a syntax error ({e})") from None
    if p.name == "pyproject.toml":
        data = data.get("tool", {}).get("stabdiag", {})
        where = f"{p} [tool.stabdiag]"
    else:
        where = str(p)
    return parse_policy(data, where=where)


def parse_policy(data: Mapping[str, Any], *, where: str = "config") -> Policy:
    """Validate a config table; every error names the file and key and lists what is allowed."""
    _known(data, TOP_KEYS, where)
    mapping = data.get("map", {})
    if not isinstance(mapping, Mapping) or not all(isinstance(v, str) for v in mapping.values()):
        raise ConfigError(f'{where}: map: expected a table of "canonical" = "series name" strings')
    per_run = []
    for pattern, table in _table(data, "per-run", where).items():
        w = f"{where} per-run.{pattern!r}"
        if not isinstance(table, Mapping):
            raise ConfigError(f"{w}: expected a table with {', '.join(RUN_KEYS)}")
        _known(table, RUN_KEYS, w)
        per_run.append(
            RunOverride(
                pattern=pattern,
                select=_kinds(table, "select", w),
                ignore=_kinds(table, "ignore", w),
                fail_on=_fail_on(table, w),
            )
        )
    detectors = {}
    for name, values in _table(data, "detectors", where).items():
        w = f"{where} detectors.{name}"
        kind = _kind(name, w)
        if not isinstance(values, Mapping):
            raise ConfigError(f"{w}: expected a table of thresholds")
        detectors[kind] = _thresholds(kind, values, w)
    return Policy(
        select=_kinds(data, "select", where),
        ignore=_kinds(data, "ignore", where) or (),
        fail_on=_fail_on(data, where) or "error",
        map=dict(mapping),
        detectors=detectors,
        per_run=tuple(per_run),
        source=where,
    )


def _known(table: Mapping[str, Any], keys: Sequence[str], where: str) -> None:
    bad = [k for k in table if k not in keys]
    if bad:
        raise ConfigError(
            f"{where}: unknown {words.plural('key', len(bad))} {', '.join(map(repr, bad))}; "
            f"known keys: {', '.join(keys)}"
        )


def _table(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    t = data.get(key, {})
    if not isinstance(t, Mapping):
        raise ConfigError(f"{where}: {key}: expected a table")
    return t


def _fail_on(data: Mapping[str, Any], where: str) -> str | None:
    if "fail-on" not in data:
        return None
    parse_fail_on(data["fail-on"], f"{where}: fail-on")
    return str(data["fail-on"])


def _kind(name: str, where: str) -> str:
    try:
        from stabdiag.detectors import by_kind
    except ImportError:  # registry not importable: keep the name as given
        return name
    try:
        return by_kind(name).kind
    except KeyError as e:
        raise ConfigError(f"{where}: {e.args[0]}") from None


def _kinds(data: Mapping[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    if key not in data:
        return None
    v = data[key]
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ConfigError(
            f'{where}: {key}: expected a list of kinds or codes, e.g. ["loss-spike", "SD201"]'
        )
    return tuple(_kind(x, where) for x in v)


def _config_class(kind: str) -> type:
    from stabdiag.detectors import by_kind

    cls = by_kind(kind).config
    if cls is None or not dataclasses.is_dataclass(cls):
        raise ConfigError(f"detector {kind} has no thresholds to set")
    return cls


def _thresholds(kind: str, values: Mapping[str, Any], where: str) -> dict[str, Any]:
    cls = _config_class(kind)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _known(values, tuple(fields), where)
    out = {}
    for k, v in values.items():
        default = getattr(cls(), k)
        if isinstance(default, bool) or isinstance(v, bool):
            ok = isinstance(v, bool) and isinstance(default, bool)
        elif isinstance(default, int):
            ok = isinstance(v, int)
        elif isinstance(default, float):
            ok = isinstance(v, int | float)
            v = float(v) if ok else v
        else:
            ok = isinstance(v, type(default))
        if not ok:
            raise ConfigError(
                f"{where}: {k} = {v!r}: expected {type(default).__name__} like the default {default!r}"
            )
        out[k] = v
    return out
