"""The one way stabdiag reads YAML (MLflow meta.yaml, Lightning hparams.yaml): data only, bounded.

``yaml.safe_load`` builds no objects, but it still expands aliases: a 504-byte meta.yaml of
nested aliases ("billion laughs") becomes gigabytes once ``run_name`` is turned into a string.
Metadata files written by MLflow and Lightning never use anchors or aliases, so an alias is
refused outright (a YAMLError like any other malformed file), and files over MAX_BYTES are not
parsed at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 1 << 20  # a run's metadata; anything larger is not what these files hold


class NoAliasSafeLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (no expansion, so no billion laughs)."""

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: ANN401 - yaml's own types
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases are not accepted in log metadata", event.start_mark
            )
        return super().compose_node(parent, index)


def read_text(path: Path) -> str:
    """The file's text, or OSError when it is larger than MAX_BYTES."""
    with open(path, "rb") as fh:
        raw = fh.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise OSError(f"{path}: larger than {MAX_BYTES} bytes; not parsed as metadata")
    return raw.decode("utf-8", errors="replace")


def load(text: str) -> Any:  # noqa: ANN401 - any YAML document
    loader = NoAliasSafeLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def text_value(x: object) -> str | None:
    """A scalar where a string is expected (str, int, float), else None: a list or mapping in
    ``run_name`` is not a name."""
    if isinstance(x, bool) or x is None:
        return None
    if isinstance(x, (str, int, float)):
        s = str(x)
        return s[:256] if s else None
    return None
