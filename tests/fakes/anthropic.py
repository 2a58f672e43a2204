"""A fake Anthropic Messages API on loopback: the one scripted thing in the test suite.

    from tests.fakes.anthropic import FakeAnthropic, text, tool_use, error
    with FakeAnthropic(keys={"sk-ant-real"}) as fake:
        fake.script(tool_use("Bash", {"command": "echo hi"}), text("done"))
        fake.url      # "http://127.0.0.1:PORT"  (ANTHROPIC_BASE_URL)
        fake.calls    # list[Call]: method, path, query, headers, json, body, ...

As a pytest fixture: `fake_anthropic` (tests/conftest.py), a fresh one per test that
accepts any key.

Endpoints (under an optional `prefix`): `POST /v1/messages` (any query string), `POST
/v1/messages/count_tokens`, `GET /v1/models`. Anything else is Anthropic's 404 JSON.

Scripting: each `POST /v1/messages` takes the first scripted `Reply` whose `match`
accepts the call (`match=None` accepts any) and removes it; when none matches, it gets
`fake.default` (`text("ok")` unless changed). That is how tests skip the Claude CLI's
side requests (title generation, quota probes...): script the main replies with
`match=main_loop` (a request that offers tools) and let the rest take the default.

With `"stream": true` the answer is real SSE (message_start with usage,
content_block_start/delta/stop, message_delta with stop_reason and usage, message_stop),
otherwise a JSON message. Every answer carries `request-id` and `anthropic-ratelimit-*`.

Auth: when `keys` is given, an `x-api-key` / `Authorization: Bearer` not in it gets
Anthropic's 401 JSON; the call is still recorded. `keys=None` accepts anything.

Failure modes a reply can carry: `error(status, type, message, headers=...)`,
`delay_headers=s` (sleep before the response starts), `event_gap=s` (between SSE events),
`drop_after=n` (close the connection after n SSE events, without the terminating chunk),
`n_text_deltas=k` (split the text into ~k deltas), `usage={...}` (override),
`headers={...}` (extra response headers), `gzip=True` (JSON answers, content-encoding).

Each `Call` records when the fake saw the client go away (`disconnected_at`, monotonic),
so tests can check that a proxy closes its upstream request promptly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip as gzip_module
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from ml_agent.proxy.serving import ServerThread

DEFAULT_MODEL = "claude-sonnet-4-5-20250929"
DEFAULT_USAGE = {
    "input_tokens": 100,
    "output_tokens": 20,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
}
MODELS = [
    ("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5"),
    ("claude-opus-4-1-20250805", "Claude Opus 4.1"),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5"),
]
_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}_fake{next(_ids):020d}"


# -- What the test scripts -----------------------------------------------------------------
@dataclasses.dataclass
class Call:
    """One request the fake received."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    json: Any  # the parsed body, or None
    started_at: float  # time.monotonic()
    disconnected_at: float | None = None  # when the client went away before the end
    completed: bool = False  # the whole answer was sent
    dropped: bool = False  # the fake cut the stream (drop_after)
    events_sent: int = 0
    event_times: list[float] = dataclasses.field(default_factory=list)  # monotonic, per SSE event

    @property
    def api_key(self) -> str | None:
        if "x-api-key" in self.headers:
            return self.headers["x-api-key"]
        auth = self.headers.get("authorization", "")
        return auth[7:] if auth.lower().startswith("bearer ") else None


@dataclasses.dataclass
class Reply:
    """One scripted answer to `POST /v1/messages`; build it with text/tool_use/error."""

    blocks: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    stop_reason: str = "end_turn"
    status: int = 200
    error_body: dict[str, Any] | None = None  # set by error(): a JSON error, never SSE
    usage: dict[str, int] | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    match: Callable[[Call], bool] | None = None
    delay_headers: float = 0.0
    event_gap: float = 0.0
    drop_after: int | None = None
    n_text_deltas: int = 1
    gzip: bool = False
    model: str | None = None  # default: the request's model


def text(content: str, **options: Any) -> Reply:
    """An assistant text answer (stop_reason end_turn)."""
    return Reply(blocks=[{"type": "text", "text": content}], **options)


def tool_use(name: str, input: dict[str, Any], *, preamble: str | None = None,
             **options: Any) -> Reply:
    """A tool call (stop_reason tool_use), optionally after some text."""
    blocks = [{"type": "text", "text": preamble}] if preamble else []
    blocks.append({"type": "tool_use", "id": _id("toolu"), "name": name, "input": input})
    return Reply(blocks=blocks, stop_reason="tool_use", **options)


def error(status: int, type: str, message: str, *, headers: dict[str, str] | None = None,
          **options: Any) -> Reply:
    """An Anthropic error answer, e.g. error(429, "rate_limit_error", "slow down",
    headers={"retry-after": "3"})."""
    body = {"type": "error", "error": {"type": type, "message": message}}
    return Reply(status=status, error_body=body, headers=dict(headers or {}), **options)


def main_loop(call: Call) -> bool:
    """`match=` predicate: the agent's own turns (they offer tools), not side requests."""
    return bool(isinstance(call.json, dict) and call.json.get("tools"))


# -- Wire format ---------------------------------------------------------------------------
def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def _split(s: str, k: int) -> list[str]:
    if k <= 1 or len(s) <= 1:
        return [s]
    size = max(1, -(-len(s) // k))
    return [s[i : i + size] for i in range(0, len(s), size)]


def _usage(reply: Reply) -> dict[str, int]:
    return {**DEFAULT_USAGE, **(reply.usage or {})}


def _message(reply: Reply, model: str, content: list[dict[str, Any]], stop: str | None,
             usage: dict[str, int]) -> dict[str, Any]:
    return {
        "id": _id("msg"), "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": stop, "stop_sequence": None, "usage": usage,
    }


def sse_events(reply: Reply, model: str) -> list[dict[str, Any]]:
    """The events Anthropic streams for this reply, in order."""
    usage = _usage(reply)
    start_usage = {**usage, "output_tokens": 1}
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": _message(reply, model, [], None, start_usage)},
    ]
    for index, block in enumerate(reply.blocks):
        if block["type"] == "text":
            events.append({"type": "content_block_start", "index": index,
                           "content_block": {"type": "text", "text": ""}})
            if index == 0:
                events.append({"type": "ping"})
            for piece in _split(block["text"], reply.n_text_deltas):
                events.append({"type": "content_block_delta", "index": index,
                               "delta": {"type": "text_delta", "text": piece}})
        else:
            start = {**block, "input": {}}
            events.append({"type": "content_block_start", "index": index,
                           "content_block": start})
            for piece in _split(json.dumps(block["input"]), reply.n_text_deltas):
                events.append({"type": "content_block_delta", "index": index,
                               "delta": {"type": "input_json_delta", "partial_json": piece}})
        events.append({"type": "content_block_stop", "index": index})
    events.append({"type": "message_delta",
                   "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
                   "usage": usage})
    events.append({"type": "message_stop"})
    return events


def _headers(extra: dict[str, str], content_type: str) -> list[tuple[bytes, bytes]]:
    headers = {
        "content-type": content_type,
        "request-id": _id("req"),
        "anthropic-organization-id": "00000000-0000-0000-0000-000000000000",
        "anthropic-ratelimit-requests-limit": "4000",
        "anthropic-ratelimit-requests-remaining": "3999",
        "anthropic-ratelimit-requests-reset": "2026-11-26T00:00:01Z",
        "anthropic-ratelimit-tokens-limit": "2000000",
        "anthropic-ratelimit-tokens-remaining": "1999000",
        "anthropic-ratelimit-tokens-reset": "2026-11-26T00:00:01Z",
        **{k.lower(): v for k, v in extra.items()},
    }
    return [(k.encode(), v.encode()) for k, v in headers.items()]


# -- The server ----------------------------------------------------------------------------
class FakeAnthropic:
    """The fake API on 127.0.0.1 (a random free port) in a background thread."""

    def __init__(self, keys: Iterable[str] | None = None, *, prefix: str = "",
                 default: Reply | None = None, host: str = "127.0.0.1") -> None:
        self.keys = set(keys) if keys is not None else None
        self.prefix = prefix.rstrip("/")
        self.default = default or text("ok")
        self.calls: list[Call] = []
        self._script: list[Reply] = []
        self._lock = threading.Lock()
        self._server = ServerThread(self._asgi, host=host)
        self.url = self._server.url + self.prefix

    # Scripting ----------------------------------------------------------------------------
    def script(self, *replies: Reply) -> FakeAnthropic:
        """Queue replies for `POST /v1/messages`, in order (see module docstring)."""
        with self._lock:
            self._script.extend(replies)
        return self

    @property
    def pending(self) -> list[Reply]:
        """Scripted replies not taken yet."""
        with self._lock:
            return list(self._script)

    def message_calls(self) -> list[Call]:
        return [c for c in self.calls if c.path.endswith("/v1/messages")]

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.calls.clear()

    def _take(self, call: Call) -> Reply:
        with self._lock:
            for i, reply in enumerate(self._script):
                if reply.match is None or reply.match(call):
                    return self._script.pop(i)
        return self.default

    # Lifecycle ----------------------------------------------------------------------------
    def start(self) -> FakeAnthropic:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def signal_stop(self) -> None:
        """Begin stopping without waiting (then `join()`): stop several servers at once."""
        self._server.signal_stop()

    def join(self) -> None:
        self._server.join()

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ASGI ---------------------------------------------------------------------------------
    async def _asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        headers: dict[str, str] = {}
        for k, v in scope["headers"]:
            name = k.decode("latin-1").lower()
            value = v.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        raw_path = scope.get("raw_path") or scope["path"].encode()
        call = Call(method=scope["method"], path=raw_path.decode("latin-1"),
                    query=scope.get("query_string", b"").decode("latin-1"), headers=headers,
                    body=body, json=parsed, started_at=time.monotonic())
        with self._lock:
            self.calls.append(call)

        path = scope["path"]
        if self.prefix and path.startswith(self.prefix + "/"):
            path = path[len(self.prefix) :]
        elif self.prefix:
            path = "/<outside prefix>"
        if self.keys is not None and call.api_key not in self.keys:
            await self._json(send, 401, {"type": "error", "error": {
                "type": "authentication_error", "message": "invalid x-api-key"}}, {})
        elif (scope["method"], path) == ("POST", "/v1/messages"):
            await self._messages(call, self._take(call), receive, send)
        elif (scope["method"], path) == ("POST", "/v1/messages/count_tokens"):
            await self._json(send, 200, {"input_tokens": max(1, len(body) // 4)}, {})
        elif (scope["method"], path) == ("GET", "/v1/models"):
            data = [{"type": "model", "id": i, "display_name": n,
                     "created_at": "2025-09-29T00:00:00Z"} for i, n in MODELS]
            await self._json(send, 200, {"data": data, "has_more": False,
                                         "first_id": data[0]["id"],
                                         "last_id": data[-1]["id"]}, {})
        else:
            await self._json(send, 404, {"type": "error", "error": {
                "type": "not_found_error", "message": f"no route {scope['method']} {path}"}}, {})
        if call.disconnected_at is None and not call.dropped:
            call.completed = True

    async def _json(self, send: Any, status: int, body: dict[str, Any],
                    extra: dict[str, str], gzip: bool = False) -> None:
        data = json.dumps(body).encode()
        if gzip:
            data = gzip_module.compress(data)
            extra = {**extra, "content-encoding": "gzip"}
        headers = _headers(extra, "application/json")
        headers.append((b"content-length", str(len(data)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def _messages(self, call: Call, reply: Reply, receive: Any, send: Any) -> None:
        gone = asyncio.Event()

        async def watch() -> None:  # the client going away is what some tests check
            while (await receive())["type"] != "http.disconnect":
                pass
            call.disconnected_at = time.monotonic()
            gone.set()

        watcher = asyncio.create_task(watch())
        try:
            if reply.delay_headers:
                with _suppress_timeout():
                    await asyncio.wait_for(gone.wait(), reply.delay_headers)
                if gone.is_set():
                    return
            request = call.json if isinstance(call.json, dict) else {}
            model = reply.model or request.get("model") or DEFAULT_MODEL
            if reply.error_body is not None:
                await self._json(send, reply.status, reply.error_body, reply.headers, reply.gzip)
                return
            if not request.get("stream"):
                usage = _usage(reply)
                message = _message(reply, model, reply.blocks, reply.stop_reason, usage)
                await self._json(send, reply.status, message, reply.headers, reply.gzip)
                return
            headers = _headers({"cache-control": "no-cache", **reply.headers},
                               "text/event-stream; charset=utf-8")
            await send({"type": "http.response.start", "status": reply.status,
                        "headers": headers})
            for n, event in enumerate(sse_events(reply, model)):
                if reply.drop_after is not None and n >= reply.drop_after:
                    call.dropped = True
                    return  # uvicorn closes the connection: no terminating chunk
                if n and reply.event_gap:
                    with _suppress_timeout():
                        await asyncio.wait_for(gone.wait(), reply.event_gap)
                if gone.is_set():
                    return
                await send({"type": "http.response.body", "body": _sse(event),
                            "more_body": True})
                call.events_sent += 1
                call.event_times.append(time.monotonic())
            await send({"type": "http.response.body", "body": b""})
        finally:
            watcher.cancel()


class _suppress_timeout:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> bool:
        return exc_type is TimeoutError
