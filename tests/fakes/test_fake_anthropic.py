"""The fake Anthropic API keeps its promises (other tests rely on them)."""

from __future__ import annotations

import httpx

from tests.fakes.anthropic import FakeAnthropic, main_loop, text


def test_scripted_replies_skip_side_requests_and_auth_is_checked():
    with FakeAnthropic(keys={"k"}, prefix="/p") as fake, httpx.Client(
            base_url=fake.url, headers={"x-api-key": "k"}, timeout=10) as client:
        fake.script(text("main turn", match=main_loop))
        side = client.post("/v1/messages", json={"model": "m", "messages": []})
        main = client.post("/v1/messages?beta=true",
                           json={"model": "m", "messages": [], "tools": [{"name": "Bash"}]})
        assert side.json()["content"] == [{"type": "text", "text": "ok"}]
        assert main.json()["content"] == [{"type": "text", "text": "main turn"}]
        assert fake.pending == []
        bad = client.post("/v1/messages", json={}, headers={"x-api-key": "nope"})
        assert bad.status_code == 401
        assert bad.json()["error"]["type"] == "authentication_error"
        assert [c.query for c in fake.calls] == ["", "beta=true", ""]
        assert [c.api_key for c in fake.calls] == ["k", "k", "nope"]


def test_the_fixture_gives_a_running_fake(fake_anthropic):
    response = httpx.get(fake_anthropic.url + "/v1/models", timeout=10)
    assert response.status_code == 200
    assert response.json()["data"][0]["type"] == "model"
