"""What the bench tests share."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def artifacts_dir(tiny_models_dir: Path) -> Path:
    """Where the tests' engines export and cache their graphs: the session's temporary
    directory (the one tests/service_helpers.py gives a service process), never the
    repository's artifacts/. Passed to each load, not set in the environment."""
    return tiny_models_dir.parent / "onnx-artifacts"
