"""Fixtures for the local backend tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.local.helpers import tiny_venv


@pytest.fixture(scope="session")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_venv(tmp_path_factory.mktemp("venv") / "venv")
