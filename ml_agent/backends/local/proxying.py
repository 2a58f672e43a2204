"""The run's proxy, served by the supervisor on 127.0.0.1 with an in-memory token store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ml_agent.plan import Plan


class LocalProxy:
    """`ml_agent.proxy`'s app on a background uvicorn thread; the key stays in this process.

    `tokens` (TokenStore) and `usage` (UsageSink) are in memory: the supervisor writes the
    run's token before the sandbox starts and reads the usage back at the end.
    `on_upstream_auth_error(status, type, message)` is called (on the server's thread)
    when the upstream refuses the key.
    """

    def __init__(self, plan: Plan, key: str,
                 on_upstream_auth_error: Callable[[int, str, str], None] | None = None) -> None:
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
        self._server = ServerThread(app, host="127.0.0.1", port=0)

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> LocalProxy:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()
