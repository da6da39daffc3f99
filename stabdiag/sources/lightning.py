"""PyTorch Lightning CSVLogger: ``version_N/metrics.csv`` (+ ``hparams.yaml`` into meta).

metrics.csv is a sparse wide CSV (research/formats.md section 3), so the generic wide reader does
the work; this module adds the run name (the version dir) and the hyperparameters. hparams.yaml
may carry ``!!python/object`` tags: the loader ignores every unknown tag instead of building it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from stabdiag.sources import csv as csv_reader
from stabdiag.sources import safe_yaml
from stabdiag.sources.raw import RawRun

FORMAT = "lightning-csv"
_VERSION_DIR = re.compile(r"^version_\d+$")


def looks_like(path: Path, head: bytes) -> bool:
    """A ``metrics.csv`` beside an ``hparams.yaml`` or in a ``version_N`` dir (CSVLogger's layout)."""
    return path.name.lower() == "metrics.csv" and (
        (path.parent / "hparams.yaml").is_file() or bool(_VERSION_DIR.match(path.parent.name))
    )


class _IgnoreTagsLoader(safe_yaml.NoAliasSafeLoader):
    """SafeLoader that turns unknown tags into plain data (or None) rather than failing, and
    refuses aliases (billion laughs)."""


def _unknown(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


_IgnoreTagsLoader.add_multi_constructor("", _unknown)


def read_hparams(path: Path) -> tuple[dict, list[str]]:
    try:
        loader = _IgnoreTagsLoader(
            path.read_text(encoding="utf-8")
        )  # a SafeLoader: builds no objects
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as exc:
        return {}, [f"{path}: hparams.yaml not readable ({type(exc).__name__}); ignored"]
    return (data if isinstance(data, dict) else {"hparams": data}), []


def read(path: Path) -> list[RawRun]:
    runs = csv_reader.read(path, fmt=FORMAT, name=path.parent.name)
    hp_path = path.parent / "hparams.yaml"
    if not hp_path.is_file():
        return runs
    hparams, warns = read_hparams(hp_path)
    return [
        RawRun(
            **{
                **r.__dict__,
                "meta": {**r.meta, "hparams": hparams},
                "warnings": r.warnings + tuple(warns),
            }
        )
        for r in runs
    ]
