"""Serve an ASGI app with uvicorn: in the foreground (`serve`) or on a background thread.

Slowloris: uvicorn bounds idle keep-alive connections but not a request head that never
ends (or a connection that never sends one), so 1,100 half-open connections starved real
requests. Each connection must now deliver a whole request head within HEADER_TIMEOUT
seconds of opening or of its first byte after an answer, and at most MAX_CONNECTIONS
connections (uvicorn's limit_concurrency: 503 beyond) are served at once.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Sequence
from typing import Any

HEADER_TIMEOUT = 10.0
MAX_CONNECTIONS = 1000


def _protocol(header_timeout: float) -> type:
    """uvicorn's HTTP protocol (httptools when installed, as "auto" picks, else h11) with a
    deadline for each request head."""
    base: type
    try:
        import httptools  # noqa: F401
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol as base

    class HeadDeadline(base):  # type: ignore[valid-type,misc]
        """Closes a connection whose request head does not arrive whole in time."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._head_since: float | None = self.loop.time()
            self._head_timer = self.loop.call_later(header_timeout, self._check_head)

        def data_received(self, data: bytes) -> None:
            if self._head_since is None and self._between_requests():
                self._head_since = self.loop.time()
            super().data_received(data)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._head_since = None  # idle: timeout_keep_alive's business until bytes come

        def connection_lost(self, exc: Exception | None) -> None:
            self._head_timer.cancel()
            super().connection_lost(exc)

        def _between_requests(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _check_head(self) -> None:
            since = self._head_since
            wait = header_timeout
            if since is not None and self._between_requests():
                wait = since + header_timeout - self.loop.time()
                if wait <= 0:
                    if not self.transport.is_closing():
                        self.transport.close()
                    return
            self._head_timer = self.loop.call_later(wait, self._check_head)

    return HeadDeadline


def _config(app: Any, *, header_timeout: float = HEADER_TIMEOUT,
            max_connections: int = MAX_CONNECTIONS, **kwargs: Any) -> Any:
    import uvicorn

    # log_config=None: never reconfigure the host process's logging (tests, the supervisor);
    # no access log: request lines would carry query strings into logs for nothing.
    return uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="auto",
        interface="asgi3",
        # Client addresses (the bad-token limiter) come from the socket: a loopback client
        # must not be able to pick its own via X-Forwarded-For.
        proxy_headers=False,
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=2,
        # Idle client connections (the Claude CLI keeps one alive between turns).
        timeout_keep_alive=75,
        http=_protocol(header_timeout),
        limit_concurrency=max_connections,
        **kwargs,
    )


def serve(app: Any, host: str = "127.0.0.1", port: int = 8080,
          sock: socket.socket | None = None, **options: Any) -> None:
    """Serve `app` until SIGINT/SIGTERM (used by `ml-agent proxy serve`); on `sock` when given
    (bound by the caller, who has said what a busy port means); `options`: header_timeout,
    max_connections."""
    import uvicorn

    uvicorn.Server(_config(app, host=host, port=port, **options)).run(
        sockets=[sock] if sock else None
    )


class ServerThread:
    """uvicorn on a background thread, bound before start() returns.

    >>> with ServerThread(app) as server:   # or server.start() ... server.stop()
    ...     httpx.get(server.url + "/healthz")

    The socket is bound in the constructor's thread (port 0 = a free port), so `url` is
    known and connectable as soon as `start()` returns.
    """

    def __init__(
        self, app: Any, host: str = "127.0.0.1", port: int = 0, *,
        extra_sockets: Sequence[socket.socket] = (), **options: Any,
    ) -> None:
        """`extra_sockets`: more bound sockets to serve the same app on (a Unix socket);
        `options`: header_timeout, max_connections."""
        import uvicorn

        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        self._sockets = [self._sock, *extra_sockets]
        self._server = uvicorn.Server(_config(app, host=host, port=self.port, **options))
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _run(self) -> None:
        try:
            self._server.run(sockets=self._sockets)
        except BaseException as exc:  # surfaced by start()
            self._error = exc

    def start(self, timeout: float = 10.0) -> ServerThread:
        self._thread = threading.Thread(target=self._run, name=f"uvicorn:{self.port}", daemon=True)
        self._thread.start()
        done = threading.Event()
        while not self._server.started and self._thread.is_alive() and not done.wait(0.01):
            timeout -= 0.01
            if timeout <= 0:
                self.stop()
                raise RuntimeError(f"server on {self.url} did not start")
        if not self._server.started:
            raise RuntimeError(f"server on {self.url} failed to start: {self._error!r}")
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving; open streams are cut after a short grace period."""
        self.signal_stop()
        self.join(timeout)

    def signal_stop(self) -> None:
        """Ask the server to stop without waiting (stop several at once, then join)."""
        self._server.should_exit = True

    def join(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(timeout)
            self._thread = None
        self._sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
