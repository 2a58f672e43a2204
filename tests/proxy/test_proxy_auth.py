"""Run tokens: only a live token of a known run gets through, and a bad one costs nothing."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from ml_agent.contracts import TokenRecord, hash_token
from tests.proxy.conftest import REAL_KEY

CLIENT: httpx.Client
BODY = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": []}


@pytest.fixture(autouse=True)
def _client(http):
    global CLIENT
    CLIENT = http


def post(url: str, headers: dict[str, str]) -> httpx.Response:
    return CLIENT.post(url + "/v1/messages", json=BODY, headers=headers)


def assert_anthropic_error(response: httpx.Response, status: int, type: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == type, body
    assert body["error"]["message"]


@pytest.mark.parametrize("header", ["x-api-key", "authorization"])
def test_a_valid_token_is_swapped_for_the_real_key(proxied, header):
    token = proxied.token()
    value = f"Bearer {token}" if header == "authorization" else token
    response = post(proxied.url, {header: value})
    assert response.status_code == 200, response.text
    [call] = proxied.fake.calls
    assert call.headers["x-api-key"] == REAL_KEY
    assert "authorization" not in call.headers
    assert token not in str(call.headers)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-api-key": "mla-run-not-a-real-token"},
        {"authorization": "Bearer mla-run-not-a-real-token"},
        {"authorization": "Basic dXNlcjpwYXNz"},
        {"x-api-key": REAL_KEY},  # the real key itself is not a run token
    ],
    ids=["missing", "unknown", "unknown-bearer", "basic", "real-key"],
)
def test_bad_credentials_get_401_without_an_upstream_call(proxied, headers):
    response = post(proxied.url, headers)
    assert_anthropic_error(response, 401, "authentication_error")
    assert proxied.fake.calls == []


def test_expired_token_is_refused(proxied):
    token = proxied.token(ttl=60)
    assert post(proxied.url, {"x-api-key": token}).status_code == 200
    proxied.clock.now += 61
    assert_anthropic_error(post(proxied.url, {"x-api-key": token}), 401, "authentication_error")
    assert len(proxied.fake.calls) == 1


def test_revoked_token_is_refused_within_the_cache_ttl(proxied):
    token = proxied.token()
    assert post(proxied.url, {"x-api-key": token}).status_code == 200
    record = proxied.tokens.get(hash_token(token))
    proxied.tokens.put(hash_token(token), dataclasses.replace(record, revoked=True))
    # Cached for at most 30 s (the documented revocation delay) ...
    proxied.clock.now += 29
    assert post(proxied.url, {"x-api-key": token}).status_code == 200
    # ... then the store is asked again.
    proxied.clock.now += 2
    assert_anthropic_error(post(proxied.url, {"x-api-key": token}), 401, "authentication_error")
    assert len(proxied.fake.calls) == 2


def test_a_token_minted_after_a_failed_try_works_soon(proxied):
    token = "mla-run-minted-late"
    assert post(proxied.url, {"x-api-key": token}).status_code == 401
    proxied.tokens.put(hash_token(token), TokenRecord("late", proxied.clock() + 60))
    proxied.clock.now += 6
    assert post(proxied.url, {"x-api-key": token}).status_code == 200


def test_repeated_bad_tokens_are_rate_limited_but_good_tokens_still_work(make_proxy):
    proxied = make_proxy(bad_token_limit=3, bad_token_window=60)
    good = proxied.token()
    assert post(proxied.url, {"x-api-key": good}).status_code == 200
    for i in range(3):
        assert post(proxied.url, {"x-api-key": f"bad-{i}"}).status_code == 401
    limited = post(proxied.url, {"x-api-key": "bad-again"})
    assert_anthropic_error(limited, 429, "rate_limit_error")
    assert 0 < int(limited.headers["retry-after"]) <= 61
    assert post(proxied.url, {"x-api-key": good}).status_code == 200
    assert len(proxied.fake.calls) == 2
    proxied.clock.now += 61  # the window ends
    assert post(proxied.url, {"x-api-key": "bad-later"}).status_code == 401


def test_healthz_needs_no_token_and_reveals_nothing(proxied):
    response = CLIENT.get(proxied.url + "/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "server" not in response.headers
    assert proxied.fake.url.split("//")[1] not in response.text
    assert proxied.fake.calls == []


def test_the_key_and_tokens_never_reach_the_logs(proxied, caplog):
    caplog.set_level("DEBUG")
    token = proxied.token(budget=0.0001)
    secret_text = "do-not-log-this-prompt"
    body = {**BODY, "messages": [{"role": "user", "content": secret_text}]}
    for headers in ({"x-api-key": token}, {"x-api-key": token}, {"x-api-key": token + "x"}):
        CLIENT.post(proxied.url + "/v1/messages", json=body, headers=headers)
    CLIENT.post(proxied.url + "/v1/nope", json=body, headers={"x-api-key": token})
    assert caplog.records, "the proxy logs nothing at DEBUG?"
    for needle in (REAL_KEY, token, secret_text):
        assert needle not in caplog.text
