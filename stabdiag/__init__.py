"""stabdiag: training-stability diagnostics for ML runs.

Public API: ``analyze`` logs (paths or a long DataFrame) into a ``Report``; ``load`` them into a
``MetricsTable``; ``load_policy`` reads a policy file. Everything but the small result types is
loaded on first use, so ``import stabdiag`` stays light (no pandas, no torch). The in-loop guard
is ``from stabdiag.live import Monitor``; the training-loop callbacks are in
``stabdiag.integrations``.
"""

from stabdiag.errors import StabdiagError
from stabdiag.findings import Finding, Severity, Skipped

__version__ = "0.1.0"

__all__ = [
    "Finding",
    "MetricsTable",
    "Remedy",
    "Report",
    "RunSummary",
    "Severity",
    "Skipped",
    "StabdiagError",
    "__version__",
    "analyze",
    "load",
    "load_policy",
]

# name -> module it lives in, imported on first attribute access (PEP 562).
_LAZY = {
    "analyze": "stabdiag.api",
    "load": "stabdiag.api",
    "load_policy": "stabdiag.policy",
    "Report": "stabdiag.report",
    "RunSummary": "stabdiag.report",
    "Remedy": "stabdiag.remedies",
    "MetricsTable": "stabdiag.table",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'stabdiag' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
