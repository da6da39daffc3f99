"""MLflow file store (``mlruns/``): one RawRun per run directory.

Layout facts: research/formats.md section 7. A run dir is ``<exp>/<run_id>/`` with ``meta.yaml``
and ``metrics/<key>`` files of ``<timestamp_ms> <value> <step>`` lines (very old files: no step,
so the line index is the step). Keys with ``/`` are sub-directories and are rebuilt from the
relative path. Rows of all keys are merged by timestamp (stable), which is the write order MLflow
saw. The name is the ``mlflow.runName`` tag, else ``run_name`` from meta.yaml, else the run id;
params, tags and the experiment name go to ``meta``. YAML is read with safe_yaml (no objects, no
aliases, bounded size); a step that is not a finite integer makes its line a malformed line.
Stray nested stores (``mlruns/mlruns/0``) are walked too; ``.trash`` and artifacts are not.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import yaml

from stabdiag.errors import SourceError
from stabdiag.sources import safe_yaml
from stabdiag.sources.raw import RawRun, bad_lines_warning, from_rows, parse_number

FORMAT = "mlflow"
_MAX_VALUE = 64 * 1024
_SKIP_DIRS = frozenset({".trash", "artifacts", "models", "params", "tags", "metrics"})


def _yaml(path: Path) -> dict:
    try:
        data = safe_yaml.load(safe_yaml.read_text(path))
    except (OSError, yaml.YAMLError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _is_run(d: Path) -> bool:
    return (d / "meta.yaml").is_file() and (d / "metrics").is_dir()


def run_of(path: Path) -> Path | None:
    """The MLflow run directory a metric file belongs to (``<run>/metrics/<key...>``), if any."""
    if "metrics" not in path.parts[:-1]:  # no parent named metrics: asked of every file sniffed
        return None
    for parent in path.parents:
        if parent.name == "metrics" and (parent.parent / "meta.yaml").is_file():
            return parent.parent
    return None


def looks_like(path: Path, head: bytes | str = b"") -> bool:
    """A metric file of an MLflow run, or a store / experiment / run directory."""
    if run_of(path) is not None:
        return True
    if not path.is_dir():
        return False
    if _is_run(path) or path.name == "mlruns" or (path / "mlruns").is_dir():
        return True
    return (path / "meta.yaml").is_file() and any(_is_run(c) for c in path.iterdir() if c.is_dir())


def run_dirs(root: Path) -> list[Path]:
    """Every run directory under ``root`` (itself included), in sorted walk order."""
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        d = Path(dirpath)
        if _is_run(d):
            found.append(d)
            dirnames[:] = []
            continue
        dirnames[:] = sorted(n for n in dirnames if n not in _SKIP_DIRS)
    return found


def _small_files(d: Path) -> dict[str, str]:
    if not d.is_dir():
        return {}
    out = {}
    for p in sorted(d.rglob("*")):
        if p.is_file() and not p.is_symlink():
            with open(p, "rb") as fh:  # a tag or param value: short; never a whole big file
                out[p.relative_to(d).as_posix()] = fh.read(_MAX_VALUE).decode("utf-8", "replace")
    return out


def read_run(d: Path) -> RawRun:
    meta_yaml = _yaml(d / "meta.yaml")
    exp_yaml = _yaml(d.parent / "meta.yaml")
    tags = _small_files(d / "tags")
    params = _small_files(d / "params")
    points: list[tuple[float, int, int, str, float]] = []  # (ts, file order, line, key, ...)
    bad: list[str] = []
    order = 0
    for p in sorted((d / "metrics").rglob("*")):
        if not p.is_file():
            continue
        key = p.relative_to(d / "metrics").as_posix()
        for i, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines()):
            parts = line.split()
            if not parts:
                continue
            if len(parts) not in (2, 3):
                bad.append(f"{key}:{i + 1}")
                continue
            ts, val = parse_number(parts[0]), parse_number(parts[1])
            step = parse_number(parts[2]) if len(parts) == 3 else float(i)
            if not (
                isinstance(ts, float)
                and isinstance(val, float)
                and isinstance(step, float)
                and math.isfinite(step)
                and step == int(step)
                and abs(step) < 2**63
            ):
                bad.append(f"{key}:{i + 1}")
                continue
            points.append((ts, order, int(step), key, val))
            order += 1
    points.sort(key=lambda r: (r[0], r[1]))
    rows = [(s, k, v) for _, _, s, k, v in points]
    name = (
        safe_yaml.text_value(tags.get("mlflow.runName"))
        or safe_yaml.text_value(meta_yaml.get("run_name"))
        or d.name
    )
    warnings = []
    if bad:
        warnings.append(
            bad_lines_warning(str(d / "metrics"), "malformed metric lines", bad).replace(
                "(line", "(file:line"
            )
        )
    meta = {
        "run_id": safe_yaml.text_value(meta_yaml.get("run_id"))
        or safe_yaml.text_value(meta_yaml.get("run_uuid"))
        or d.name,
        "experiment": safe_yaml.text_value(exp_yaml.get("name")) or d.parent.name,
        "status": safe_yaml.text_value(meta_yaml.get("status")),
        "params": params,
        "tags": {k: v for k, v in tags.items() if k != "mlflow.log-model.history"},
    }
    return from_rows(
        name,
        str(d),
        FORMAT,
        rows,
        wall=[p[0] / 1000.0 for p in points],
        warnings=warnings,
        meta=meta,
    )


def read(path: Path) -> list[RawRun]:
    runs = run_dirs(path)
    if not runs:
        raise SourceError(
            path,
            "an MLflow file store (mlruns/<exp>/<run>/metrics/...)",
            "no run directory with meta.yaml and metrics/",
        )
    seen: set[str] = set()
    out = []
    for d in runs:
        run = read_run(d)
        rid = str(run.meta.get("run_id"))
        if rid in seen:
            continue
        seen.add(rid)
        out.append(run)
    return out
