"""Renderer fixtures; the helpers behind them live in render_util.py."""

from render_util import golden, report, update_golden  # noqa: F401  (fixtures)
