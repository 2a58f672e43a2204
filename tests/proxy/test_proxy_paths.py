"""Allowed paths only; anything a server could read as another path is refused."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest

from ml_agent.proxy import paths

ALLOWED = paths.parse_allowed(paths.DEFAULT_ALLOWED)


def raw_request(url: str, method: str, path: str, token: str) -> tuple[int, dict]:
    """Send `path` byte for byte (httpx would normalise it first)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        body = b'{"model": "claude-sonnet-4-5", "messages": []}' if method == "POST" else None
        conn.request(method, path, body=body, headers={"x-api-key": token,
                                                       "content-type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/v1/messages/../models", 403),
        ("POST", "/v1/./messages", 403),
        ("POST", "/v1/%2e%2e/v1/messages", 403),
        ("POST", "/v1%2Fmessages", 403),
        ("POST", "/v1/messages%2F..%2Fmodels", 403),
        ("POST", "//v1/messages", 403),
        ("POST", "/v1//messages", 403),
        ("POST", "/v1\\messages", 403),
        ("POST", "/v1/complete", 404),
        ("POST", "/v1/files", 404),
        ("GET", "/v1/organizations/me", 404),
        ("POST", "/", 404),
        ("GET", "/v1/messages", 405),
        ("DELETE", "/v1/models", 405),
    ],
)
def test_refused_paths_never_reach_upstream(proxied, method, path, status):
    got, body = raw_request(proxied.url, method, path, proxied.token())
    assert got == status
    assert body["type"] == "error"
    assert body["error"]["type"] == {403: "permission_error", 404: "not_found_error",
                                     405: "invalid_request_error"}[status]
    assert proxied.fake.calls == []


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/", "/v1/messages?beta=true"])
def test_allowed_paths_pass(proxied, path):
    status, _ = raw_request(proxied.url, "POST", path, proxied.token())
    assert status == 200
    assert proxied.fake.calls[0].path == "/v1/messages"


def test_the_allow_list_is_configurable(make_proxy):
    proxied = make_proxy(allowed_paths=["POST /v1/messages"])
    token = proxied.token()
    assert raw_request(proxied.url, "GET", "/v1/models", token)[0] == 404
    assert raw_request(proxied.url, "POST", "/v1/messages/count_tokens", token)[0] == 404
    assert raw_request(proxied.url, "POST", "/v1/messages", token)[0] == 200
    assert len(proxied.fake.calls) == 1


def test_a_bad_token_learns_nothing_about_paths(proxied):
    status, body = raw_request(proxied.url, "POST", "/v1/files", "not-a-token")
    assert (status, body["error"]["type"]) == (401, "authentication_error")


@pytest.mark.parametrize(
    ("raw", "prefix", "expected"),
    [
        (b"/v1/messages", "", "/v1/messages"),
        (b"/gw/v1/messages", "/gw", "/v1/messages"),
        (b"/gw/v1/models/", "/gw", "/v1/models"),
    ],
)
def test_check_returns_the_api_path(raw, prefix, expected):
    method = "GET" if expected.endswith("models") else "POST"
    assert paths.check(method, raw, prefix, ALLOWED) == expected


@pytest.mark.parametrize(
    ("raw", "prefix", "status"),
    [
        (b"/gwx/v1/messages", "/gw", 404),
        (b"/v1/messages", "/gw", 404),
        (b"/gw/../v1/messages", "/gw", 403),
        (b"/v1/messages\x00", "", 403),
        ("/v1/méssages".encode(), "", 403),
    ],
)
def test_check_refuses(raw, prefix, status):
    with pytest.raises(paths.PathRefused) as refused:
        paths.check("POST", raw, prefix, ALLOWED)
    assert refused.value.status == status


def test_parse_allowed_accepts_strings_and_pairs():
    assert paths.parse_allowed(["post /v1/messages/", ("GET", "v1/models")]) == {
        ("POST", "/v1/messages"), ("GET", "/v1/models")}
