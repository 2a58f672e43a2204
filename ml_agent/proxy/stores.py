"""In-memory token store and usage sink (the local backend, `proxy serve`, tests).

On Modal both are `modal.Dict`-backed (the Modal backend provides them); the proxy only
sees the `TokenStore` / `UsageSink` Protocols of ml_agent.contracts.
"""

from __future__ import annotations

import threading

from ml_agent.contracts import TokenRecord

USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "requests",
    "cost_usd",
)


def empty_usage() -> dict[str, float]:
    return dict.fromkeys(USAGE_KEYS, 0)


class MemoryTokenStore:
    """sha256(token) -> TokenRecord in a dict. Never blocks (the proxy calls it inline)."""

    nonblocking = True

    def __init__(self) -> None:
        self._records: dict[str, TokenRecord] = {}
        self._lock = threading.Lock()

    def get(self, token_hash: str) -> TokenRecord | None:
        with self._lock:
            return self._records.get(token_hash)

    def put(self, token_hash: str, record: TokenRecord) -> None:
        with self._lock:
            self._records[token_hash] = record


class MemoryUsageSink:
    """Per-run usage totals in a dict. Never blocks (the proxy calls it inline)."""

    nonblocking = True

    def __init__(self) -> None:
        self._totals: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def add(self, run_id: str, usage: dict[str, float]) -> dict[str, float]:
        with self._lock:
            totals = self._totals.setdefault(run_id, empty_usage())
            for key, value in usage.items():
                totals[key] = totals.get(key, 0) + value
            return dict(totals)

    def get(self, run_id: str) -> dict[str, float]:
        with self._lock:
            return dict(self._totals.get(run_id) or empty_usage())
