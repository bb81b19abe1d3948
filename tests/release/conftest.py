"""Release checks: documentation examples, docstrings, and the wheel test (marker ``release``)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "release: slow release check (builds the sdist and wheel, installs the wheel in a "
        "fresh virtualenv); deselect with -m 'not release'",
    )
