"""Slowloris and token floods: half-open connections and a neighbour's bad tokens must not
starve a run's real requests."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import httpx

from ml_agent.contracts import TokenRecord
from ml_agent.proxy import MemoryTokenStore

BODY = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": []}


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=10)


def test_half_open_connections_are_closed_and_real_requests_get_through(make_proxy):
    proxied = make_proxy(server_options={"header_timeout": 0.5, "max_connections": 20})
    token = proxied.token()
    flood = [connect(proxied.url) for _ in range(40)]
    for i, sock in enumerate(flood):  # half of them start a head, the rest send nothing
        if i % 2:
            sock.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\n")
    try:
        for sock in flood:  # the server closes each one (recv would block forever else)
            while sock.recv(1024):
                pass
        response = httpx.post(proxied.url + "/v1/messages", json=BODY,
                              headers={"x-api-key": token}, timeout=10)
        assert response.status_code == 200
    finally:
        for sock in flood:
            sock.close()


def test_a_body_that_never_ends_is_refused(make_proxy):
    proxied = make_proxy(body_timeout=0.5)
    token = proxied.token()
    with connect(proxied.url) as sock:
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: " + token.encode()
                     + b"\r\ncontent-length: 100\r\n\r\n{")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
            if b"not received" in answer:
                break
    assert answer.startswith(b"HTTP/1.1 408")
    assert proxied.fake.calls == []


def post(url: str, token: str) -> int:
    return httpx.post(url + "/v1/messages", json=BODY, headers={"x-api-key": token},
                      timeout=10).status_code


def test_a_fresh_valid_token_works_while_its_address_floods_bad_ones(make_proxy):
    proxied = make_proxy(bad_token_limit=5)
    for i in range(25):
        post(proxied.url, f"bad-{i}")
    assert post(proxied.url, "bad-again") == 429  # the flood is limited
    assert post(proxied.url, proxied.token("fresh-run")) == 200  # minted just now


class NetworkTokenStore(MemoryTokenStore):
    """A token store whose lookups the proxy must not spend freely (like a modal.Dict)."""

    nonblocking = False

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    def get(self, token_hash: str) -> TokenRecord | None:
        self.lookups += 1
        return super().get(token_hash)


def test_a_flood_costs_a_networked_store_one_lookup_a_second(make_proxy):
    store = NetworkTokenStore()
    proxied = make_proxy(bad_token_limit=5, tokens=store)
    for i in range(5):
        assert post(proxied.url, f"bad-{i}") == 401
    lookups = store.lookups
    assert [post(proxied.url, f"flood-{i}") for i in range(20)] == [429] * 20
    assert store.lookups - lookups <= 1  # the clock stands still: one spare lookup
    fresh = proxied.token("fresh-run")
    proxied.clock.now += 1  # the next spare lookup
    assert post(proxied.url, fresh) == 200
    assert post(proxied.url, fresh) == 200  # known good now: no lookup needed
