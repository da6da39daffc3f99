"""Root fixtures and options. Helpers live in tests/common_util.py (conftest modules are not imported
by name: several test folders have their own)."""

from __future__ import annotations

from pathlib import Path

import pytest
from common_util import REAL_LOGS


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="Rewrite the golden files of the renderer tests instead of comparing.",
    )


@pytest.fixture
def real_logs() -> Path:
    if not REAL_LOGS.is_dir():
        pytest.skip("../shared/real_logs is not present (a user's clone has none)")
    return REAL_LOGS
