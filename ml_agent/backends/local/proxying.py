"""The run's proxy, served by the supervisor on 127.0.0.1 with an in-memory token store."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ml_agent.plan import Plan


class LocalProxy:
    """`ml_agent.proxy`'s app on a background uvicorn thread; the key stays in this process.

    `tokens` (TokenStore) and `usage` (UsageSink) are in memory: the supervisor writes the
    run's token before the sandbox starts and reads the usage back at the end.
    `on_upstream_auth_error(status, type, message)` is called (on the server's thread)
    when the upstream refuses the key. With `unix_socket`, the same app is served on that
    path too (mode 0600), for a sandbox without network (`sandbox.network: blocked`).
    """

    def __init__(self, plan: Plan, key: str,
                 on_upstream_auth_error: Callable[[int, str, str], None] | None = None, *,
                 unix_socket: Path | None = None) -> None:
        from ml_agent.proxy import MemoryTokenStore, MemoryUsageSink, ServerThread, create_app

        self.tokens: Any = MemoryTokenStore()
        self.usage: Any = MemoryUsageSink()
        app = create_app(
            upstream=plan.proxy.upstream,
            api_key=key,
            tokens=self.tokens,
            usage=self.usage,
            allowed_paths=plan.proxy.allowed_paths,
            on_upstream_auth_error=on_upstream_auth_error,
        )
        self.unix_socket = unix_socket
        extra = [unix_listener(unix_socket)] if unix_socket else []
        self._server = ServerThread(app, host="127.0.0.1", port=0, extra_sockets=extra)

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def port(self) -> int:
        return self._server.port

    def start(self) -> LocalProxy:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()
        if self.unix_socket is not None:
            with contextlib.suppress(FileNotFoundError):
                self.unix_socket.unlink()


def unix_listener(path: Path) -> socket.socket:
    """A Unix socket bound at `path`, connectable by this user only.

    Bound through its folder's descriptor: a socket path is limited to 108 bytes, which a
    deep `$ML_AGENT_HOME` (or a test's tmp folder) exceeds.
    """
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a stale one from a killed supervisor
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(f"/proc/self/fd/{folder}/{path.name}")
        os.chmod(path.name, 0o600, dir_fd=folder)
    except BaseException:
        sock.close()
        raise
    finally:
        os.close(folder)
    return sock
