"""Make the `lab` fixture and marker available to the lab's own tests.

tests/conftest.py may already load `tests.lab.fixtures` through `pytest_plugins`;
loading it again under the same name would create a second session lab.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker and the fixture plugin once."""
    config.addinivalue_line("markers", "lab: needs the local lab (root, podman, skopeo, ...)")
    if not config.pluginmanager.has_plugin("tests.lab.fixtures"):
        config.pluginmanager.import_plugin("tests.lab.fixtures")
