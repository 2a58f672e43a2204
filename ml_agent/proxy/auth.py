"""Run-token checks: which credential a request carries, a cached store lookup, a limiter.

A store lookup may be a network call (a `modal.Dict` on Modal), so results are cached for
at most `ttl` seconds (DESIGN.md: 30 s, which is also the revocation delay); unknown tokens
are cached for less, so that a token minted just after a failed try works soon. Stores that
never block (`nonblocking = True`) are called inline, others on a worker thread.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import anyio.to_thread

from ml_agent.contracts import TokenRecord, TokenStore, hash_token


def credential(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token a request presents: `x-api-key`, else `Authorization: Bearer`."""
    api_key = bearer = None
    for name, value in headers:
        if name == b"x-api-key":
            api_key = value
        elif name == b"authorization" and value[:7].lower() == b"bearer ":
            bearer = value[7:]
    token = api_key if api_key is not None else bearer
    return token.decode("latin-1").strip() if token else None


class TokenCache:
    """sha256(token) -> TokenRecord | None, looked up in `store` at most every `ttl` s."""

    def __init__(
        self,
        store: TokenStore,
        clock: Callable[[], float] = time.time,
        ttl: float = 30.0,
        negative_ttl: float = 5.0,
        maxsize: int = 10_000,
    ) -> None:
        self.store = store
        self.clock = clock
        self.ttl = min(ttl, 30.0)
        self.negative_ttl = min(negative_ttl, self.ttl)
        self.maxsize = maxsize
        self._entries: OrderedDict[str, tuple[TokenRecord | None, float]] = OrderedDict()
        self._inline = bool(getattr(store, "nonblocking", False))

    @property
    def inline(self) -> bool:
        """Lookups never block (an in-memory store): they cost nothing to make."""
        return self._inline

    def known(self, token_hash: str) -> bool:
        """The hash was a real token at the last lookup (it may have expired since)."""
        entry = self._entries.get(token_hash)
        return entry is not None and entry[0] is not None

    async def lookup(self, token_hash: str) -> TokenRecord | None:
        now = self.clock()
        entry = self._entries.get(token_hash)
        if entry is not None:
            record, fetched = entry
            if now - fetched < (self.ttl if record is not None else self.negative_ttl):
                return record
        if self._inline:
            record = self.store.get(token_hash)
        else:
            record = await anyio.to_thread.run_sync(self.store.get, token_hash)
        self._entries[token_hash] = (record, now)
        self._entries.move_to_end(token_hash)
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)
        return record


def refusal(record: TokenRecord | None, now: float) -> str | None:
    """Why `record` does not authorise a request now, or None when it does."""
    if record is None:
        return "invalid run token"
    if record.revoked:
        return "this run token was revoked (the run has ended)"
    if now >= record.expires_at:
        return "this run token has expired (the run has ended)"
    return None


class BadTokenLimiter:
    """Counts failed authentications per client address in fixed windows.

    Once an address has `limit` failures in a window, its requests with tokens that are
    not already known good get 429 until the window ends, unless their lookup is free or
    the address's spare lookup (one a second) finds them valid. A token known good, or
    fresh and valid, still works, so a misbehaving neighbour behind the same address cannot
    lock a run out.
    """

    def __init__(self, clock: Callable[[], float], limit: int = 20, window: float = 60.0):
        self.clock = clock
        self.limit = limit
        self.window = window
        self._counts: dict[Any, tuple[float, int]] = {}
        self._spare: dict[Any, float] = {}

    def retry_after(self, address: Any) -> int | None:
        """Seconds until `address` may try again, or None when it is not limited."""
        entry = self._counts.get(address)
        if entry is None:
            return None
        start, count = entry
        left = start + self.window - self.clock()
        if left <= 0:
            del self._counts[address]
            return None
        return int(left) + 1 if count >= self.limit else None

    def spare_lookup(self, address: Any, every: float = 1.0) -> bool:
        """May a limited `address` have one store lookup now (at most one per `every` s)?"""
        now = self.clock()
        if now - self._spare.get(address, float("-inf")) < every:
            return False
        self._spare[address] = now
        if len(self._spare) > 100_000:
            self._spare.clear()
        return True

    def failed(self, address: Any) -> None:
        now = self.clock()
        start, count = self._counts.get(address, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        self._counts[address] = (start, count + 1)
        if len(self._counts) > 100_000:  # an address flood: forget the oldest windows
            for key in sorted(self._counts, key=lambda k: self._counts[k][0])[:50_000]:
                del self._counts[key]


__all__ = ["BadTokenLimiter", "TokenCache", "credential", "hash_token", "refusal"]
