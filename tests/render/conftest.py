"""Renderer fixtures; the helpers behind them live in rendhelpers.py."""

from rendhelpers import golden, report, update_golden  # noqa: F401  (fixtures)
