"""Live diagnostics: the in-loop ``Monitor`` and the incremental state ``stabdiag watch`` shares.

Nothing here imports torch or a training framework at import time; the framework callbacks live
in ``stabdiag.integrations`` and import their framework when they are imported.
"""

from stabdiag.live.monitor import ACTIONS, FINDINGS_FILE, Monitor, Verdict
from stabdiag.live.state import Event, LiveRun, SeriesBuffer, Tracker

__all__ = [
    "ACTIONS",
    "FINDINGS_FILE",
    "Event",
    "LiveRun",
    "Monitor",
    "SeriesBuffer",
    "Tracker",
    "Verdict",
]
