"""Fixtures for the local backend tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.local.helpers import Terminal, tiny_venv


@pytest.fixture(scope="session")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_venv(tmp_path_factory.mktemp("venv") / "venv")


@pytest.fixture
def terminal() -> Iterator[Callable[..., Terminal]]:
    """`terminal(args, env, cwd=None)` starts a command on a pseudo-terminal; at teardown each
    one still running is killed, and all are waited for and closed (also after a failure)."""
    started: list[Terminal] = []

    def start(args: list[str], env: dict[str, str], cwd: Path | None = None) -> Terminal:
        started.append(Terminal(args, env, cwd))
        return started[-1]

    yield start
    for term in started:
        term.cleanup()
