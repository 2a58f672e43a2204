"""Fixtures for the local backend tests."""

from __future__ import annotations

import socket
import threading
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


@pytest.fixture
def server() -> Iterator[int]:
    """A TCP server on the host's 127.0.0.1 that answers `hello`; yields its port."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    stop = threading.Event()

    def serve():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            conn.sendall(b"hello")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv.getsockname()[1]
    stop.set()
    thread.join()
    srv.close()
