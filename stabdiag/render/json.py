"""The JSON report: the contract CI jobs parse (DESIGN.md, schema_version 1)."""

from __future__ import annotations

import json
import math
from typing import Any

from stabdiag.report import Report


def _clean(x: Any) -> Any:
    # Strict JSON has no NaN/Inf: non-finite evidence values become null.
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def strict_json(doc: Any) -> str:
    """``doc`` as indented strict JSON: NaN and +-Inf (a diverged loss) become null, so any
    parser reads it. Every JSON output of the package goes through here."""
    return json.dumps(_clean(doc), indent=2, allow_nan=False) + "\n"


def render_json(report: Report) -> str:
    """The report's JSON contract (``Report.to_dict()``)."""
    return strict_json(report.to_dict())
