"""stabdiag: training-stability diagnostics for ML runs.

Public API: read logs into a ``MetricsTable``, run detectors, build a ``Report``.
"""

from stabdiag.findings import Finding, Severity, Skipped
from stabdiag.table import MetricsTable

__version__ = "0.1.0"

__all__ = ["Finding", "MetricsTable", "Severity", "Skipped", "__version__"]
