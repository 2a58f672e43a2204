"""Usage metering from streams and JSON answers, the dated price table, run budgets."""

from __future__ import annotations

import gzip
import json

import pytest

from ml_agent.proxy import pricing
from ml_agent.proxy.metering import Meter
from tests.fakes.anthropic import Reply, error, sse_events, text
from tests.proxy.conftest import eventually

BODY = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": []}
STREAM = {**BODY, "stream": True}
CACHED = {"input_tokens": 50, "output_tokens": 300, "cache_creation_input_tokens": 2000,
          "cache_read_input_tokens": 10_000}


def sonnet_cost(u: dict) -> float:  # $3 in, $15 out, writes 1.25x, reads 0.1x (per MTok)
    return (u["input_tokens"] * 3 + u["output_tokens"] * 15
            + u["cache_creation_input_tokens"] * 3.75 + u["cache_read_input_tokens"] * 0.3) / 1e6


@pytest.mark.parametrize("stream", [True, False], ids=["sse", "json"])
def test_usage_is_metered_per_run(proxied, http, stream):
    proxied.fake.script(text("a", usage=CACHED), text("b", usage=CACHED))
    token, other = proxied.token("run-a"), proxied.token("run-b")
    for t in (token, token, other):
        response = http.post(proxied.url + "/v1/messages", json=STREAM if stream else BODY,
                             headers={"x-api-key": t})
        assert response.status_code == 200
    eventually(lambda: proxied.usage.get("run-b")["requests"] == 1)
    totals = proxied.usage.get("run-a")
    assert totals["requests"] == 2
    for key, value in CACHED.items():
        assert totals[key] == 2 * value
    assert totals["cost_usd"] == pytest.approx(2 * sonnet_cost(CACHED))
    assert proxied.usage.get("run-b")["input_tokens"] == 100  # the default reply


def test_error_answers_count_as_requests_without_tokens(proxied, http):
    proxied.fake.script(error(529, "overloaded_error", "busy"))
    http.post(proxied.url + "/v1/messages", json=STREAM, headers={"x-api-key": proxied.token()})
    eventually(lambda: proxied.usage.get("run-1")["requests"] == 1)
    assert proxied.usage.get("run-1")["cost_usd"] == 0


def test_budget_refuses_further_requests_once_spent(proxied, http):
    # Each default answer costs (100 * $3 + 20 * $15) / 1e6 = $0.0006.
    token = proxied.token(budget=0.001)
    statuses = []
    for _ in range(3):
        response = http.post(proxied.url + "/v1/messages", json=STREAM,
                             headers={"x-api-key": token})
        statuses.append(response.status_code)
    assert statuses == [200, 200, 402]
    body = response.json()
    assert body["error"]["type"] == "billing_error"
    assert "budget" in body["error"]["message"] and "run-1" in body["error"]["message"]
    assert response.headers["x-should-retry"] == "false"
    assert len(proxied.fake.calls) == 2
    # Another run with its own budget is unaffected.
    assert http.post(proxied.url + "/v1/messages", json=STREAM,
                     headers={"x-api-key": proxied.token("run-2", budget=1)}).status_code == 200


def test_budget_counts_usage_recorded_elsewhere(proxied, http):
    proxied.usage.add("run-1", {"cost_usd": 5.0, "requests": 9})  # e.g. an earlier container
    response = http.post(proxied.url + "/v1/messages", json=BODY,
                         headers={"x-api-key": proxied.token(budget=5)})
    assert response.status_code == 402
    assert proxied.fake.calls == []


# -- The meter on its own ------------------------------------------------------------------
def stream_bytes(reply: Reply, crlf: bool = False) -> bytes:
    data = b"".join(
        f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode()
        for e in sse_events(reply, "claude-opus-4-1-20250805")
    )
    return data.replace(b"\n", b"\r\n") if crlf else data


def meter_usage(data: bytes, step: int, content_type="text/event-stream", encoding="") -> dict:
    meter = Meter("", content_type, encoding, 200)
    for i in range(0, len(data), step):
        meter.feed(data[i : i + step])
    return meter.usage()


@pytest.mark.parametrize("step", [1, 7, 64, 10_000])
@pytest.mark.parametrize("crlf", [False, True])
def test_meter_reads_usage_however_the_stream_is_cut(step, crlf):
    reply = text("usage " * 40, n_text_deltas=40, usage=CACHED)  # "usage" in text too
    usage = meter_usage(stream_bytes(reply, crlf), step)
    assert {k: usage[k] for k in CACHED} == CACHED
    assert usage["cost_usd"] == pytest.approx(pricing.cost_usd("claude-opus-4-1", CACHED))


def test_meter_reads_compressed_streams():
    data = gzip.compress(stream_bytes(text("hi", usage=CACHED)))
    assert meter_usage(data, 33, encoding="gzip")["output_tokens"] == CACHED["output_tokens"]


def test_meter_survives_garbage():
    usage = meter_usage(b'event: message_start\ndata: {"usage": nope}\n\n', 5)
    assert usage["requests"] == 1 and usage["output_tokens"] == 0


def test_meter_reads_json_answers():
    body = json.dumps({"type": "message", "model": "claude-haiku-4-5", "usage": CACHED}).encode()
    usage = meter_usage(body, 10, content_type="application/json")
    assert usage["input_tokens"] == 50
    assert usage["cost_usd"] == pytest.approx(pricing.cost_usd("claude-haiku-4-5", CACHED))


# -- Prices --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "input_", "output"),
    [
        ("claude-sonnet-4-5-20250929", 3, 15),
        ("claude-sonnet-4-5", 3, 15),
        ("claude-opus-4-1-20250805", 15, 75),
        ("claude-opus-4-5", 5, 25),
        ("claude-haiku-4-5-20251001", 1, 5),
        ("claude-3-5-haiku-20241022", 0.8, 4),
        ("claude-opus-5-5", 4, 20),
        ("claude-opus-9-9", 15, 75),  # unknown opus: the priciest opus
        ("some-other-model", 15, 75),  # unknown family: the priciest of all
    ],
)
def test_prices(model, input_, output):
    price = pricing.price_for(model)
    assert (price.input, price.output) == (input_, output)


def test_price_table_is_dated_and_complete():
    assert pricing.PRICES_AS_OF[:4].isdigit()
    assert set(pricing.MODELS.values()) <= set(pricing.TIERS)


def test_cost_splits_one_hour_cache_writes():
    usage = {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 100_000,
             "cache_creation": {"ephemeral_5m_input_tokens": 40_000,
                                "ephemeral_1h_input_tokens": 60_000}}
    assert pricing.cost_usd("claude-sonnet-4-5", usage) == pytest.approx(0.04 * 3.75 + 0.06 * 6)
    # The split alone (no total) is priced the same.
    del usage["cache_creation_input_tokens"]
    assert pricing.cost_usd("claude-sonnet-4-5", usage) == pytest.approx(0.04 * 3.75 + 0.06 * 6)


def test_long_prompts_cost_more_where_priced_so():
    short = pricing.cost_usd("claude-haiku-5-5", {"input_tokens": 100_000})
    long = pricing.cost_usd("claude-haiku-5-5", {"input_tokens": 100_001})
    assert long > 4 * short
