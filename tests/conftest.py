from __future__ import annotations

import pytest


@pytest.fixture
def store(tmp_path):
    """A fresh store folder path (created by the first Ingestor)."""
    return str(tmp_path / "store")
