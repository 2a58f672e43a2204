"""Proxy fixtures: the real proxy under uvicorn on 127.0.0.1 in front of the fake API."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from ml_agent.contracts import TokenRecord, hash_token, mint_token
from ml_agent.proxy import MemoryTokenStore, MemoryUsageSink, ServerThread, create_app
from tests.fakes.anthropic import FakeAnthropic

REAL_KEY = "sk-ant-real-key-0123456789"


class Clock:
    """A wall clock tests can move forward."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass
class Proxied:
    fake: FakeAnthropic
    url: str
    tokens: MemoryTokenStore
    usage: MemoryUsageSink
    clock: Clock

    def token(self, run_id: str = "run-1", *, ttl: float = 3600, budget: float | None = None,
              revoked: bool = False) -> str:
        token = mint_token()
        record = TokenRecord(run_id, self.clock() + ttl, budget, revoked)
        self.tokens.put(hash_token(token), record)
        return token


@pytest.fixture
def make_proxy() -> Iterator[Callable[..., Proxied]]:
    """make_proxy(fake_kwargs={...}, **create_app kwargs) -> Proxied (stopped at teardown)."""
    running: list[Any] = []

    def make(*, fake_kwargs: dict[str, Any] | None = None, upstream: str | None = None,
             usage: Any = None, tokens: Any = None, server_options: dict[str, Any] | None = None,
             **kwargs: Any) -> Proxied:
        fake = FakeAnthropic(**{"keys": {REAL_KEY}, **(fake_kwargs or {})}).start()
        running.append(fake)
        tokens, clock = tokens if tokens is not None else MemoryTokenStore(), Clock()
        usage = usage if usage is not None else MemoryUsageSink()
        app = create_app(upstream=upstream or fake.url, api_key=REAL_KEY, tokens=tokens,
                         usage=usage, clock=clock, **kwargs)
        server = ServerThread(app, **(server_options or {})).start()
        running.append(server)
        return Proxied(fake, server.url, tokens, usage, clock)

    yield make
    for thing in running:
        thing.signal_stop()
    for thing in running:
        thing.join()


@pytest.fixture
def proxied(make_proxy: Callable[..., Proxied]) -> Proxied:
    return make_proxy()


@pytest.fixture(scope="session")
def http() -> Iterator[httpx.Client]:
    """One client for all tests (creating one costs ~0.1 s of TLS setup)."""
    with httpx.Client(timeout=10) as client:
        yield client


def eventually(check: Callable[[], bool], timeout: float = 2.0) -> None:
    """Wait until `check()` holds: a JSON answer's last byte can reach the client just
    before the proxy has recorded its usage."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)
