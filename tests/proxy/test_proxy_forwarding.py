"""Faithful forwarding: statuses, headers, bodies, query strings, streaming without buffering."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.fakes.anthropic import error, main_loop, text, tool_use
from tests.proxy.conftest import REAL_KEY, eventually

BODY = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": []}
STREAM = {**BODY, "stream": True}


def sse(text_: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text_.splitlines() if line.startswith("data: ")]


def test_stream_passes_through_event_by_event(proxied, http):
    proxied.fake.script(tool_use("Bash", {"command": "ls"}, preamble="let me look",
                                 n_text_deltas=4))
    token = proxied.token()
    response = http.post(proxied.url + "/v1/messages?beta=true", json=STREAM,
                         headers={"x-api-key": token})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    events = sse(response.text)
    assert [e["type"] for e in events][:2] == ["message_start", "content_block_start"]
    assert events[-1] == {"type": "message_stop"}
    assert len(events) == proxied.fake.calls[0].events_sent
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
    assert "".join(d.get("text", "") for d in deltas) == "let me look"
    assert json.loads("".join(d.get("partial_json", "") for d in deltas)) == {"command": "ls"}


@pytest.mark.parametrize(
    ("status", "type_", "headers"),
    [
        (400, "invalid_request_error", {}),
        (413, "request_too_large", {}),
        (429, "rate_limit_error", {"retry-after": "3"}),
        (500, "api_error", {}),
        (529, "overloaded_error", {"retry-after": "10"}),
    ],
)
def test_errors_keep_status_body_and_headers(proxied, http, status, type_, headers):
    extra = {**headers, "request-id": "req_0123", "anthropic-ratelimit-tokens-remaining": "7"}
    proxied.fake.script(error(status, type_, f"upstream says {status}", headers=extra))
    response = http.post(proxied.url + "/v1/messages", json=STREAM,
                         headers={"x-api-key": proxied.token()})
    assert response.status_code == status
    assert response.json() == {"type": "error",
                               "error": {"type": type_, "message": f"upstream says {status}"}}
    for name, value in extra.items():
        assert response.headers[name] == value
    assert response.headers["content-type"] == "application/json"


def test_request_is_forwarded_faithfully(proxied, http):
    token = proxied.token()
    payload = json.dumps({**BODY, "messages": [{"role": "user", "content": "é" * 1000}]})

    def chunks():  # sent chunked: the proxy must forward it with a Content-Length
        yield payload[:100].encode()
        yield payload[100:].encode()

    response = http.post(
        proxied.url + "/v1/messages?beta=true&x=%2F1",
        content=chunks(),
        headers={
            "authorization": f"Bearer {token}",
            "anthropic-version": "2023-06-01",
            "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
            "x-stainless-retry-count": "0",
            "content-type": "application/json",
            "connection": "keep-alive, x-hop",
            "x-hop": "dropped because Connection names it",
            "te": "trailers",
            "proxy-authorization": "Basic Zm9vOmJhcg==",
            "cookie": "a=b",
        },
    )
    assert response.status_code == 200
    [call] = proxied.fake.calls
    assert (call.method, call.path, call.query) == ("POST", "/v1/messages", "beta=true&x=%2F1")
    assert call.body == payload.encode()
    assert call.headers["content-length"] == str(len(payload.encode()))
    assert "transfer-encoding" not in call.headers
    assert call.headers["anthropic-version"] == "2023-06-01"
    assert call.headers["anthropic-beta"] == "claude-code-20250219,interleaved-thinking-2025-05-14"
    assert call.headers["x-stainless-retry-count"] == "0"
    assert call.headers["x-api-key"] == REAL_KEY
    for gone in ("authorization", "x-hop", "te", "proxy-authorization", "cookie"):
        assert gone not in call.headers


def test_response_headers_pass_through_but_hop_by_hop_do_not(proxied, http):
    proxied.fake.script(text("hi", headers={"request-id": "req_abc", "x-custom": "1",
                                            "keep-alive": "timeout=5"}))
    response = http.post(proxied.url + "/v1/messages", json=BODY,
                         headers={"x-api-key": proxied.token()})
    assert response.headers["request-id"] == "req_abc"
    assert response.headers["x-custom"] == "1"
    assert response.headers["anthropic-ratelimit-requests-remaining"] == "3999"
    assert "keep-alive" not in response.headers
    assert int(response.headers["content-length"]) == len(response.content)


def test_content_encoding_passes_through_untouched(proxied, http):
    proxied.fake.script(text("compressed", gzip=True))
    with http.stream("POST", proxied.url + "/v1/messages", json=BODY,
                     headers={"x-api-key": proxied.token(), "accept-encoding": "gzip"}) as r:
        raw = b"".join(r.iter_raw())
    assert r.headers["content-encoding"] == "gzip"
    assert json.loads(gzip.decompress(raw))["content"] == [{"type": "text", "text": "compressed"}]
    assert proxied.fake.calls[0].headers["accept-encoding"] == "gzip"
    eventually(lambda: proxied.usage.get("run-1")["output_tokens"] == 20)  # through gzip


def test_accept_encoding_offers_only_what_the_meter_reads(proxied, http):
    http.post(proxied.url + "/v1/messages", json=BODY,
              headers={"x-api-key": proxied.token(), "accept-encoding": "gzip, snappy, zstd"})
    offered = proxied.fake.calls[0].headers["accept-encoding"].replace(" ", "").split(",")
    assert "gzip" in offered and "snappy" not in offered


@pytest.mark.parametrize("path", ["/v1/messages/count_tokens", "/v1/models"])
def test_other_allowed_endpoints(proxied, http, path):
    method = "GET" if path.endswith("models") else "POST"
    response = http.request(method, proxied.url + path, json=None if method == "GET" else BODY,
                            headers={"x-api-key": proxied.token()})
    assert response.status_code == 200
    assert proxied.fake.calls[0].path == path
    eventually(lambda: proxied.usage.get("run-1")["requests"] == 1)
    assert proxied.usage.get("run-1")["input_tokens"] == 0  # count_tokens is not usage


def test_events_are_not_buffered(proxied, http):
    proxied.fake.script(text("abcdef", n_text_deltas=6, event_gap=0.15))
    arrivals = []
    with http.stream("POST", proxied.url + "/v1/messages", json=STREAM,
                     headers={"x-api-key": proxied.token()}) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic())
    sent = proxied.fake.calls[0].event_times
    assert len(arrivals) == len(sent) >= 10
    # Each event reaches the client right after the fake sent it (generous bound for CI).
    assert max(a - s for a, s in zip(arrivals, sent, strict=True)) < 0.1


def test_path_prefix_on_both_sides(make_proxy, http):
    proxied = make_proxy(fake_kwargs={"prefix": "/anthropic"}, prefix="/gw")
    token = proxied.token()
    ok = http.post(proxied.url + "/gw/v1/messages?beta=true", json=BODY,
                   headers={"x-api-key": token})
    assert ok.status_code == 200, ok.text
    assert proxied.fake.calls[0].path == "/anthropic/v1/messages"
    assert http.get(proxied.url + "/gw/healthz").status_code == 200
    outside = http.post(proxied.url + "/v1/messages", json=BODY, headers={"x-api-key": token})
    assert outside.status_code == 404
    assert len(proxied.fake.calls) == 1


def test_mounted_inside_another_app(http):
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from ml_agent.proxy import MemoryTokenStore, MemoryUsageSink, ServerThread, create_app
    from tests.fakes.anthropic import FakeAnthropic
    from tests.proxy.conftest import Clock, Proxied

    with FakeAnthropic(keys={REAL_KEY}) as fake:
        tokens, usage = MemoryTokenStore(), MemoryUsageSink()
        inner = create_app(upstream=fake.url, api_key=REAL_KEY, tokens=tokens, usage=usage)

        @contextlib.asynccontextmanager
        async def lifespan(app):  # a mounted app's lifespan is its host's job
            yield
            await inner.state.proxy.aclose()

        outer = Starlette(routes=[Mount("/something", app=inner)], lifespan=lifespan)
        with ServerThread(outer) as server:
            token = Proxied(fake, server.url, tokens, usage, Clock()).token()
            response = http.post(server.url + "/something/v1/messages", json=BODY,
                                 headers={"x-api-key": token})
            assert response.status_code == 200, response.text
            assert fake.calls[0].path == "/v1/messages"


@pytest.mark.slow
def test_the_claude_cli_works_through_the_proxy(make_proxy, tmp_path: Path):
    import claude_agent_sdk

    proxied = make_proxy(fake_kwargs={"prefix": "/anthropic"}, prefix="/gw")
    proxied.fake.script(text("hello through the proxy", match=main_loop, n_text_deltas=5))
    token = proxied.token(budget=5)
    cli = Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"
    env = {
        "PATH": os.environ["PATH"], "HOME": str(tmp_path), "CLAUDE_CONFIG_DIR": str(tmp_path),
        "ANTHROPIC_BASE_URL": proxied.url + "/gw", "ANTHROPIC_API_KEY": token,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "CLAUDE_CODE_MAX_RETRIES": "0",
    }
    done = subprocess.run([str(cli), "-p", "hi", "--output-format", "stream-json", "--verbose"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["result"] == "hello through the proxy"
    calls = proxied.fake.message_calls()
    assert calls and all(c.headers["x-api-key"] == REAL_KEY for c in calls)
    assert all(c.query == "beta=true" for c in calls)
    usage = proxied.usage.get("run-1")
    assert usage["requests"] == len(calls)
    assert usage["cost_usd"] == pytest.approx(result["total_cost_usd"], rel=1e-6)


def test_the_app_runs_the_asgi_lifespan_and_closes_upstream_connections_at_shutdown():
    import asyncio

    from ml_agent.proxy import MemoryTokenStore, MemoryUsageSink, create_app
    from tests.fakes.anthropic import FakeAnthropic
    from tests.proxy.conftest import Clock, Proxied

    with FakeAnthropic(keys={REAL_KEY}) as fake:
        tokens, usage = MemoryTokenStore(), MemoryUsageSink()
        app = create_app(upstream=fake.url, api_key=REAL_KEY, tokens=tokens, usage=usage)
        token = Proxied(fake, "", tokens, usage, Clock()).token()
        pool = app.state.proxy._wire._idle  # the transport's idle connections, per origin

        async def main() -> list[str]:
            sent: list[str] = []
            # One request through the app, so that an upstream connection sits in the pool.
            messages = [{"type": "http.request", "body": json.dumps(BODY).encode()}]

            async def receive():
                return messages.pop(0) if messages else await asyncio.Event().wait()

            async def send(message):
                sent.append(message["type"] + str(message.get("status", "")))

            scope = {"type": "http", "method": "POST", "path": "/v1/messages",
                     "raw_path": b"/v1/messages", "query_string": b"", "root_path": "",
                     "headers": [(b"x-api-key", token.encode())], "client": ("127.0.0.1", 1)}
            await app(scope, receive, send)
            assert sent[0] == "http.response.start200", sent
            assert sum(len(idle) for idle in pool.values()) == 1
            lifespan = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
            await app({"type": "lifespan"}, lambda: asyncio.sleep(0, lifespan.pop(0)), send)
            return sent[-2:]

        assert asyncio.run(main()) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
        assert not pool
