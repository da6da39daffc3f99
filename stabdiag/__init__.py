"""stabdiag: training-stability diagnostics for ML runs.

Public API: read logs into a ``MetricsTable``, run detectors, build a ``Report``.
"""

from stabdiag.findings import Finding, Severity, Skipped
from stabdiag.table import MetricsTable

__version__ = "0.1.0"

__all__ = ["Finding", "MetricsTable", "Monitor", "Severity", "Skipped", "__version__"]


def __getattr__(name: str):
    # The in-loop guard (stabdiag.live) is loaded on first use: analysis imports stay light.
    if name == "Monitor":
        from stabdiag.live.monitor import Monitor

        return Monitor
    raise AttributeError(f"module 'stabdiag' has no attribute {name!r}")
