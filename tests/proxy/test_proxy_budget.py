"""Budget integrity: cut streams are metered, in-flight requests reserve, failed records count."""

from __future__ import annotations

import concurrent.futures
import json
import threading

import httpx
import pytest

from ml_agent.proxy import MemoryUsageSink, budget, pricing
from tests.fakes.anthropic import text
from tests.proxy.conftest import eventually

SONNET_OUT = 15 / 1e6  # USD per output token


def stream_request(max_tokens: int) -> dict:
    return {"model": "claude-sonnet-4-5", "max_tokens": max_tokens, "stream": True,
            "messages": [{"role": "user", "content": "write"}]}


def read_then_hang_up(url: str, token: str, body: dict, events: int) -> int:
    """Read `events` text deltas of a streamed answer, then close the connection."""
    with httpx.Client(timeout=10) as client, client.stream(
            "POST", url + "/v1/messages", json=body, headers={"x-api-key": token}) as response:
        if response.status_code != 200:
            response.read()
            return response.status_code
        seen = 0
        for line in response.iter_lines():
            if line.startswith("data:") and '"text_delta"' in line:
                seen += 1
                if seen >= events:
                    break
        return 200


def test_hanging_up_mid_stream_is_metered_so_the_budget_holds(make_proxy):
    # Each answer: 10,000 output tokens (~40,000 characters) = $0.15 at Sonnet's price; the
    # client reads half of it and hangs up. A $1 budget buys 6.7 whole answers.
    proxied = make_proxy()
    answer = text("abcd" * 10_000, n_text_deltas=200, event_gap=0.002,
                  usage={"output_tokens": 10_000})
    proxied.fake.default = answer
    token = proxied.token(budget=1.0)
    forwarded = 0
    for _ in range(30):
        status = read_then_hang_up(proxied.url, token, stream_request(16_000), events=100)
        if status != 200:
            assert status == 402
            break
        forwarded += 1
        eventually(lambda n=forwarded: proxied.usage.get("run-1")["requests"] == n)
    assert 0 < forwarded <= 2 * 1.0 / 0.15
    totals = proxied.usage.get("run-1")
    assert totals["estimated_requests"] == forwarded
    # Each cut answer is metered at no less than what it streamed (half: 5,000 tokens).
    assert totals["output_tokens"] >= forwarded * 5_000


def test_concurrent_requests_reserve_and_cannot_overspend(make_proxy):
    # 30 requests at once, each answered with 64,000 output tokens ($0.96) after 0.5 s: a
    # $1 budget fits two reservations of half of max_tokens ($0.48 each) at a time.
    proxied = make_proxy()
    proxied.fake.default = text("x", usage={"output_tokens": 64_000}, delay_headers=0.5)
    token = proxied.token(budget=1.0)
    body = {**stream_request(64_000), "stream": False}

    retry_headers = []

    def post(_: int) -> int:
        with httpx.Client(timeout=10) as client:
            response = client.post(proxied.url + "/v1/messages", json=body,
                                   headers={"x-api-key": token})
            if response.status_code == 429:
                retry_headers.append(response.headers["x-should-retry"])
            return response.status_code

    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        statuses = list(pool.map(post, range(30)))
    forwarded = len(proxied.fake.message_calls())
    reservation = budget.estimate(json.dumps(body).encode()).usd
    fits = int(1.0 // reservation)
    assert forwarded == statuses.count(200) <= fits
    # The rest: 429 while the others are in flight (retry), 402 once the budget is spent.
    assert set(statuses) <= {200, 402, 429}
    assert set(retry_headers) <= {"true"}  # the client may retry a deferred request
    # Spent at most the budget plus the documented overshoot: what the requests in flight
    # did not reserve, (1 - RESERVE_SHARE) x max_tokens each.
    spent = proxied.usage.get("run-1")["cost_usd"]
    overshoot = forwarded * (1 - budget.RESERVE_SHARE) * 64_000 * SONNET_OUT
    assert spent <= 1.0 + overshoot
    # Now over: refused outright, with the reason.
    response = httpx.post(proxied.url + "/v1/messages", json=body, headers={"x-api-key": token})
    assert response.status_code == 402


def test_a_request_that_cannot_fit_is_refused_before_it_is_sent(proxied, http):
    token = proxied.token(budget=0.10)
    response = http.post(proxied.url + "/v1/messages", json=stream_request(64_000),
                         headers={"x-api-key": token})
    assert response.status_code == 402
    message = response.json()["error"]["message"]
    assert "max_tokens=64000" in message and "$0.1 budget" in message
    assert proxied.fake.calls == []
    # A smaller max_tokens fits.
    assert http.post(proxied.url + "/v1/messages", json=stream_request(1000),
                     headers={"x-api-key": token}).status_code == 200


class FlakySink(MemoryUsageSink):
    """A usage store that fails its first `failures` writes (a modal.Dict hiccup)."""

    nonblocking = False

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def add(self, run_id: str, usage: dict[str, float]) -> dict[str, float]:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("store unavailable")
        return super().add(run_id, usage)


def test_a_failed_usage_record_is_retried(make_proxy, http):
    sink = FlakySink(failures=2)
    proxied = make_proxy(usage=sink)
    response = http.post(proxied.url + "/v1/messages", json=stream_request(100),
                         headers={"x-api-key": proxied.token()})
    assert response.status_code == 200
    eventually(lambda: sink.get("run-1")["requests"] == 1)
    assert sink.get("run-1")["output_tokens"] == 20


def test_usage_that_cannot_be_recorded_still_counts_against_the_budget(make_proxy, http):
    sink = FlakySink(failures=10**6)
    proxied = make_proxy(usage=sink)
    proxied.fake.default = text("x", usage={"output_tokens": 10_000})  # $0.15
    token = proxied.token(budget=0.16)
    statuses = [http.post(proxied.url + "/v1/messages", json=stream_request(2000),
                          headers={"x-api-key": token}).status_code for _ in range(3)]
    assert statuses == [200, 402, 402]
    assert sink.get("run-1")["requests"] == 0


# -- Estimates and prices ------------------------------------------------------------------
def test_estimate_takes_the_costliest_of_duplicate_keys():
    body = b'{"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [], ' \
           b'"model": "claude-opus-4-1", "max_tokens": 20000}'
    estimate = budget.estimate(body)
    assert estimate.max_tokens == 20000 and estimate.model == "claude-opus-4-1"
    reversed_ = b'{"max_tokens": 20000, "model": "claude-opus-4-1", "max_tokens": 10}'
    assert budget.estimate(reversed_).max_tokens == 20000


def test_estimate_of_a_body_that_is_not_json_is_the_worst_case():
    estimate = budget.estimate(b"not json")
    assert estimate.max_tokens == budget.DEFAULT_MAX_TOKENS
    assert estimate.usd >= budget.DEFAULT_MAX_TOKENS * budget.RESERVE_SHARE * 75 / 1e6


def test_web_searches_are_priced():
    usage = {"input_tokens": 0, "output_tokens": 0, "server_tool_use": {"web_search_requests": 3}}
    assert pricing.cost_usd("claude-sonnet-4-5", usage) == pytest.approx(0.03)


@pytest.mark.parametrize("model", ["claude-sonnet-4-5-20250929", "claude-sonnet-4"])
def test_long_context_prices_apply_above_200k_input(model):
    below = {"input_tokens": 150_000, "cache_read_input_tokens": 50_000, "output_tokens": 1000}
    above = {**below, "input_tokens": 150_001}
    assert pricing.cost_usd(model, below) == pytest.approx((150_000 * 3 + 50_000 * 0.3
                                                            + 1000 * 15) / 1e6)
    assert pricing.cost_usd(model, above) == pytest.approx((150_001 * 6 + 50_000 * 0.6
                                                            + 1000 * 22.5) / 1e6)


def test_unknown_sonnet_is_priced_at_the_costliest_sonnet_long_prices_included():
    price = pricing.price_for("claude-sonnet-9")
    assert price.long is not None and price.long.output == 22.5


class RacingSink(MemoryUsageSink):
    """A store behind the network whose reads can be overtaken: the second read of a run's
    totals answers only once a record has landed (what it read is then stale)."""

    nonblocking = False

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.second_read = threading.Event()
        self.recorded = threading.Event()

    def get(self, run_id: str) -> dict[str, float]:
        self.reads += 1
        totals = super().get(run_id)
        if self.reads == 1:
            self.second_read.wait(5)
        elif self.reads == 2:
            self.second_read.set()
            self.recorded.wait(5)
        return totals

    def add(self, run_id: str, usage: dict[str, float]) -> dict[str, float]:
        totals = super().add(run_id, usage)
        self.recorded.set()
        return totals


def test_a_stale_read_of_the_totals_does_not_hide_a_record_from_the_budget(make_proxy):
    # Two requests start at once on a budget that one answer spends: both read the run's
    # totals from the store; the first is admitted and recorded while the second read is on
    # its way. That read (stale: no cost yet) used to replace the fresh totals in the proxy's
    # cache, so the run looked unspent until its next record: the second request, and any
    # later one, went through (3x the budget, over the documented 2x).
    sink = RacingSink()
    proxied = make_proxy(usage=sink)
    proxied.fake.default = text("x", usage={"output_tokens": 1000})  # $0.015
    token = proxied.token(budget=0.01)
    body = stream_request(1000)  # reserves ~$0.0075: fits

    def post(_: int) -> int:
        with httpx.Client(timeout=10) as client:
            return client.post(proxied.url + "/v1/messages", json=body,
                               headers={"x-api-key": token}).status_code

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        statuses = sorted(pool.map(post, range(2)))
    later = post(0)
    assert len(proxied.fake.message_calls()) == 1, (statuses, later)
    assert statuses == [200, 402] and later == 402


class OvertakenRecordSink(MemoryUsageSink):
    """A store behind the network whose first record's answer arrives after the second's:
    the totals it answers (without the second record) are then the older ones."""

    nonblocking = False

    def __init__(self) -> None:
        super().__init__()
        self.adds = 0
        self.second_answered = threading.Event()

    def add(self, run_id: str, usage: dict[str, float]) -> dict[str, float]:
        self.adds += 1
        n = self.adds
        totals = super().add(run_id, usage)
        if n == 1:
            self.second_answered.wait(5)
        elif n == 2:
            threading.Timer(0.2, self.second_answered.set).start()  # after this returns
        return totals


def test_an_older_record_answer_does_not_replace_newer_totals(make_proxy):
    # Two requests fit together; both answers together spend the budget. The first record's
    # answer came back last and replaced the totals that had both: a third request went
    # through on a spent budget.
    sink = OvertakenRecordSink()
    proxied = make_proxy(usage=sink)
    proxied.fake.default = text("x", usage={"output_tokens": 1000}, delay_headers=0.3)
    token = proxied.token(budget=0.025)  # two reservations of ~$0.0075 fit; two $0.015 spend it

    def post(_: int) -> int:
        with httpx.Client(timeout=10) as client:
            return client.post(proxied.url + "/v1/messages", json=stream_request(1000),
                               headers={"x-api-key": token}).status_code

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert list(pool.map(post, range(2))) == [200, 200]
    assert post(0) == 402
    assert len(proxied.fake.message_calls()) == 2


def read_to_message_stop_and_hang_up(url: str, token: str, body: dict) -> None:
    """Read a streamed answer to its last event, then close without waiting for the end of
    the HTTP body (the proxy records usage just before it sends that end)."""
    with httpx.Client(timeout=10) as client, client.stream(
            "POST", url + "/v1/messages", json=body, headers={"x-api-key": token}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if "message_stop" in line:
                break


def test_a_usage_record_retried_as_the_client_hangs_up_is_not_lost(make_proxy):
    # The first write fails; the client, which has its answer, closes the connection during
    # the retry's back-off: that cancelled the retry, and the usage was neither recorded
    # nor kept for the next record.
    sink = FlakySink(failures=1)
    proxied = make_proxy(usage=sink)
    read_to_message_stop_and_hang_up(proxied.url, proxied.token(), stream_request(100))
    eventually(lambda: sink.get("run-1")["requests"] == 1)
    assert sink.get("run-1")["output_tokens"] == 20


def test_usage_that_cannot_be_recorded_now_is_recorded_later_without_another_request(
        make_proxy, http):
    # Every try of the record fails (the store is down for a while): the usage is kept and
    # written once the store is back, even if the run makes no further request (its last
    # answer, or a proxy that scales down, would otherwise lose it).
    sink = FlakySink(failures=3)
    proxied = make_proxy(usage=sink, flush_every=0.2)
    response = http.post(proxied.url + "/v1/messages", json=stream_request(100),
                         headers={"x-api-key": proxied.token()})
    assert response.status_code == 200
    eventually(lambda: sink.get("run-1")["requests"] == 1, timeout=5)
    assert sink.get("run-1")["output_tokens"] == 20
