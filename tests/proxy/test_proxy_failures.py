"""Failures upstream or at the client: 502, 504, 413, broken streams, disconnects."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from tests.fakes.anthropic import text
from tests.proxy.conftest import eventually

BODY = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": []}
STREAM = {**BODY, "stream": True}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_upstream_is_502(make_proxy, http):
    proxied = make_proxy(upstream=f"http://127.0.0.1:{free_port()}")
    response = http.post(proxied.url + "/v1/messages", json=BODY,
                         headers={"x-api-key": proxied.token()})
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "api_error"
    assert proxied.usage.get("run-1")["requests"] == 1


def test_no_response_headers_in_time_is_504_and_upstream_is_closed(make_proxy, http):
    proxied = make_proxy(header_timeout=0.3)
    proxied.fake.script(text("late", delay_headers=5))
    started = time.monotonic()
    response = http.post(proxied.url + "/v1/messages", json=BODY,
                         headers={"x-api-key": proxied.token()})
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "timeout_error"
    assert time.monotonic() - started < 2
    eventually(lambda: proxied.fake.calls[0].disconnected_at is not None)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversized_bodies_are_413_without_an_upstream_call(make_proxy, http, chunked):
    proxied = make_proxy(max_body=10_000)
    payload = json.dumps({**BODY, "pad": "x" * 20_000}).encode()
    content = iter([payload[:5000], payload[5000:]]) if chunked else payload
    response = http.post(proxied.url + "/v1/messages", content=content,
                         headers={"x-api-key": proxied.token()})
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"
    assert proxied.fake.calls == []
    ok = http.post(proxied.url + "/v1/messages", json=BODY, headers={"x-api-key": proxied.token()})
    assert ok.status_code == 200


def test_upstream_breaking_off_ends_the_client_stream_promptly(proxied, http):
    proxied.fake.script(text("x" * 50, n_text_deltas=10, drop_after=6, event_gap=0.05,
                             usage={"input_tokens": 1000}))
    received = []
    started = time.monotonic()
    token = proxied.token()
    with (
        pytest.raises(httpx.RemoteProtocolError),  # no terminating chunk: visibly incomplete
        http.stream("POST", proxied.url + "/v1/messages", json=STREAM,
                    headers={"x-api-key": token}) as response,
    ):
        for line in response.iter_lines():
            if line.startswith("data: "):
                received.append(json.loads(line[6:]))
    assert time.monotonic() - started < 2
    assert len(received) == 7
    assert received[-1] == {"type": "error",
                            "error": {"type": "api_error", "message": "upstream connection lost"}}
    # What was streamed before the break is still metered.
    eventually(lambda: proxied.usage.get("run-1")["input_tokens"] == 1000)


def test_client_disconnect_closes_upstream_within_a_second(proxied, http):
    proxied.fake.script(text("y" * 100, n_text_deltas=100, event_gap=0.2))
    with http.stream("POST", proxied.url + "/v1/messages", json=STREAM,
                     headers={"x-api-key": proxied.token()}) as response:
        next(response.iter_raw())
    closed = time.monotonic()  # leaving the block closes the client's connection
    eventually(lambda: proxied.fake.calls[0].disconnected_at is not None, timeout=3)
    assert proxied.fake.calls[0].disconnected_at - closed < 1.0
    assert not proxied.fake.calls[0].completed


def test_client_disconnect_while_waiting_for_headers_closes_upstream(proxied):
    proxied.fake.script(text("slow", delay_headers=10))
    with httpx.Client(timeout=0.3) as client, pytest.raises(httpx.ReadTimeout):
        client.post(proxied.url + "/v1/messages", json=BODY,
                    headers={"x-api-key": proxied.token()})
    closed = time.monotonic()
    eventually(lambda: proxied.fake.calls[0].disconnected_at is not None, timeout=3)
    assert proxied.fake.calls[0].disconnected_at - closed < 1.0


def test_default_timeouts_fit_the_claude_cli():
    from ml_agent.proxy import app

    # The CLI waits 10 minutes for an answer (x-stainless-timeout: 600): so does the proxy.
    assert app.HEADER_TIMEOUT >= 600 and app.READ_TIMEOUT >= 600


def test_a_key_the_upstream_refuses_is_reported_to_the_collaborator(make_proxy, http):
    refused: list[tuple[int, str, str]] = []
    proxied = make_proxy(fake_kwargs={"keys": {"sk-ant-another-key"}},
                         on_upstream_auth_error=lambda *args: refused.append(args))
    response = http.post(proxied.url + "/v1/messages", json=STREAM,
                         headers={"x-api-key": proxied.token()})
    assert response.status_code == 401  # the client still gets the upstream's answer
    assert response.json()["error"]["type"] == "authentication_error"
    eventually(lambda: bool(refused))
    assert refused == [(401, "authentication_error", "invalid x-api-key")]


def test_the_proxy_own_refusals_are_not_upstream_key_errors(make_proxy, http):
    refused: list[tuple[int, str, str]] = []
    proxied = make_proxy(on_upstream_auth_error=lambda *args: refused.append(args))
    response = http.post(proxied.url + "/v1/messages", json=STREAM,
                         headers={"x-api-key": "not-a-run-token"})
    assert response.status_code == 401
    assert refused == []
