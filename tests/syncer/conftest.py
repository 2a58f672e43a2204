"""Fixtures for the syncer tests: one trackio-made template database per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.syncer.helpers import make_template


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database created by trackio 0.43 itself (its real schema, 3 rows)."""
    return make_template(tmp_path_factory.mktemp("template") / "trackio")
