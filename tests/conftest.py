"""Shared fixtures. `fake_anthropic`: a fresh fake Anthropic API on loopback per test."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# `from tests.fakes...` also under a bare `pytest` (python -m pytest adds the cwd itself).
ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.fakes.anthropic import FakeAnthropic  # noqa: E402


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    """A FakeAnthropic accepting any key; script it with `fake_anthropic.script(...)`."""
    with FakeAnthropic() as fake:
        yield fake
