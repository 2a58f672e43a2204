"""The proxy: check a run token, forward to the pinned upstream with the real key, meter usage.

The hot path is a raw ASGI callable (`AnthropicProxy`): httpx requests and responses over
a pooled lean HTTP/1.1 transport (wire.py), the raw body bytes relayed as they arrive
(never buffered or decoded; what one socket read brings leaves in one write), usage read
on the side (metering.py). `create_app` wraps it in a Starlette app whose lifespan closes
the upstream connections. Security model: docs/security.md, section "The proxy".
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import httpx

from ml_agent.contracts import TokenStore, UsageSink, hash_token
from ml_agent.proxy import auth, budget, paths
from ml_agent.proxy.errors import send_error, sse_error_event
from ml_agent.proxy.metering import Meter, decoders
from ml_agent.proxy.wire import Http11Transport, env_proxy, ssl_context

log = logging.getLogger("ml_agent.proxy")
Scope = MutableMapping[str, Any]

MAX_BODY = 32 * 1024 * 1024  # Anthropic's own limit for a Messages request
# The Claude CLI gives up on a request after 10 minutes (x-stainless-timeout: 600).
HEADER_TIMEOUT = 600.0
READ_TIMEOUT = 600.0
# A request body must arrive whole within this (a slow-body slowloris holds a connection).
BODY_TIMEOUT = 120.0
CONNECT_TIMEOUT = 10.0

HOP_BY_HOP = frozenset(
    b"connection keep-alive proxy-authenticate proxy-authorization proxy-connection te "
    b"trailer transfer-encoding upgrade".split()
)
# Credentials (ours and the client's), what httpx sets itself, and what says who the client
# is: none of it goes upstream.
DROP_REQUEST = HOP_BY_HOP | frozenset(
    b"host content-length x-api-key authorization cookie accept-encoding forwarded "
    b"x-forwarded-for x-forwarded-host x-forwarded-proto x-real-ip".split()
)
PATH_ERROR = {403: "permission_error", 404: "not_found_error", 405: "invalid_request_error"}
# Recording usage is retried (a modal.Dict call can fail transiently), then kept in memory,
# counted against the budget, added to the next record and tried again every FLUSH_EVERY
# seconds until it is written (a run's last answer has no next record).
RECORD_TRIES = 3
RECORD_BACKOFF = 0.1  # seconds, x4 per try
FLUSH_EVERY = 10.0
#: Called with (status, error type, message) when the upstream refuses the key (401/403).
AuthErrorCallback = Callable[[int, str, str], None]


class AnthropicProxy:
    """Raw ASGI app; build it with `create_app` (same arguments)."""

    def __init__(
        self,
        *,
        upstream: str,
        api_key: str,
        tokens: TokenStore,
        usage: UsageSink,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        allowed_paths: Iterable[str | tuple[str, str]] = paths.DEFAULT_ALLOWED,
        max_body: int = MAX_BODY,
        header_timeout: float = HEADER_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        body_timeout: float = BODY_TIMEOUT,
        prefix: str = "",
        token_ttl: float = 30.0,
        bad_token_limit: int = 20,
        bad_token_window: float = 60.0,
        on_upstream_auth_error: AuthErrorCallback | None = None,
        environ: Mapping[str, str] | None = None,
        flush_every: float = FLUSH_EVERY,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream must be an http(s) URL (got {upstream!r})")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("upstream must not carry a query, fragment or credentials")
        if not api_key:
            raise ValueError("api_key is empty")
        self.upstream = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self._key = api_key.encode()
        self.usage_sink = usage
        self.clock = clock
        self.allowed = paths.parse_allowed(allowed_paths)
        self.max_body = max_body
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.tokens = auth.TokenCache(tokens, clock, ttl=token_ttl)
        self.limiter = auth.BadTokenLimiter(clock, bad_token_limit, bad_token_window)
        self._usage_inline = bool(getattr(usage, "nonblocking", False))
        self.ledger = budget.Ledger()
        self.flush_every = flush_every
        self._flusher: asyncio.Task[None] | None = None
        self._flushing: set[str] = set()  # runs whose pending usage a record is writing
        self._closing = False
        self.on_upstream_auth_error = on_upstream_auth_error
        self._totals: dict[str, dict[str, float]] = {}
        self._encodings = set(decoders()) | {"identity"}
        self._urls: dict[tuple[str, bytes], httpx.URL] = {}
        # Our lean HTTP/1.1 wire unless told otherwise (wire.py says why), or httpx's own
        # transport when the environment names a proxy for the upstream (HTTPS_PROXY,
        # NO_PROXY). The transport is called directly: the proxy needs none of
        # httpx.AsyncClient's redirects, cookies, auth or default headers. CA certificates
        # (SSL_CERT_FILE / SSL_CERT_DIR, else certifi's) load only when they can matter.
        env = os.environ if environ is None else environ
        verify = self.upstream.startswith("https:")
        via = env_proxy(self.upstream, env)
        if transport is None and via:
            log.info("reaching the upstream through the proxy the environment names")
            transport = httpx.AsyncHTTPTransport(proxy=via, verify=ssl_context(verify, env),
                                                 trust_env=False)
        self._wire: httpx.AsyncBaseTransport = transport or Http11Transport(
            verify=verify, env=env)
        self._timeouts = httpx.Timeout(
            connect=connect_timeout, read=read_timeout, write=60.0, pool=header_timeout
        ).as_dict()

    def __repr__(self) -> str:  # never the key
        return f"AnthropicProxy(upstream={self.upstream!r})"

    async def aclose(self) -> None:
        """Close the upstream connections (the app's lifespan does it at shutdown), after a
        last try at writing usage that could not be recorded yet."""
        self._closing = True
        if self._flusher is not None:
            self._flusher.cancel()
        for run_id in list(self.ledger.unrecorded):
            await self._record(run_id, {})
        await self._wire.aclose()

    # -- ASGI ------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self._handle(scope, receive, tracking_send)
        except Exception:
            log.exception("proxy error")
            if not started:
                await send_error(send, "api_error", "internal error in the ml-agent proxy")

    async def _handle(self, scope: Scope, receive: Any, send: Any) -> None:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        root = scope.get("root_path", "").encode()
        if root and raw_path.startswith(root):
            raw_path = raw_path[len(root) :]
        method = scope["method"]
        if raw_path in (b"/healthz", (self.prefix + "/healthz").encode()) and method == "GET":
            await _json(send, 200, {"status": "ok"})
            return

        # Who: a valid, live run token (no upstream call otherwise).
        client = (scope.get("client") or ("?", 0))[0]
        token = auth.credential(scope["headers"])
        token_hash = hash_token(token) if token else None
        retry = self.limiter.retry_after(client)
        limited = retry is not None and not (token_hash and self.tokens.known(token_hash))
        # A limited address still gets its tokens looked up when that is free (an in-memory
        # store) or, for a store behind the network, once a second: a fresh valid token
        # works while a neighbour at the same address floods bad ones.
        if limited and not (token_hash and (self.tokens.inline
                                            or self.limiter.spare_lookup(client))):
            await self._flooded(send, client, retry)
            return
        record = await self.tokens.lookup(token_hash) if token_hash else None
        why = auth.refusal(record, self.clock()) if token_hash else "missing run token"
        if why or record is None:
            self.limiter.failed(client)
            if limited:
                await self._flooded(send, client, retry)
                return
            log.info("refused: %s (from %s)", why, client)
            await send_error(send, "authentication_error",
                             f"ml-agent proxy: {why}; use the run's token as x-api-key")
            return

        # What: an allowed path only.
        try:
            api_path = paths.check(method, raw_path, self.prefix, self.allowed)
        except paths.PathRefused as exc:
            await send_error(send, PATH_ERROR[exc.status], str(exc), status=exc.status)
            return

        # How much: the run's budget (spent already: refused before the body is read).
        run_id, limit = record.run_id, record.budget_usd
        if limit is not None and await self._spent(run_id) >= limit:
            await self._over_budget(send, run_id, limit)
            return

        body = await self._read_body(scope, receive, send)
        if body is None:
            return
        estimate = None
        if limit is not None and api_path == "/v1/messages":
            # Reserve this request's worst plausible cost (budget.py): concurrent requests
            # see each other's reservations. No await between the check and the reserve.
            estimate = budget.estimate(body)
            spent = await self._spent(run_id)
            in_flight = self.ledger.reserved(run_id)
            if spent + in_flight + estimate.usd > limit:
                await self._does_not_fit(send, run_id, limit, spent, in_flight, estimate)
                return
            self.ledger.reserve(run_id, estimate.usd)
        try:
            await self._forward(scope, receive, send, run_id, api_path, body, estimate)
        finally:
            if estimate is not None:
                self.ledger.release(run_id, estimate.usd)

    async def _flooded(self, send: Any, client: str, retry: int | None) -> None:
        log.debug("refused: too many bad tokens from %s", client)  # a flood: stay quiet
        await send_error(send, "rate_limit_error",
                         "too many requests with invalid run tokens; try again later",
                         headers={"retry-after": str(retry or 1)})

    async def _spent(self, run_id: str) -> float:
        """Recorded cost plus cost this process could not record (not reservations)."""
        totals = await self._run_totals(run_id)
        return float(totals.get("cost_usd", 0.0)) + self.ledger.unrecorded_usd(run_id)

    async def _over_budget(self, send: Any, run_id: str, limit: float) -> None:
        spent = await self._spent(run_id)
        log.info("refused: run %s is over budget", run_id)
        await send_error(
            send, "billing_error",
            f"ml-agent proxy: run {run_id} has used ${spent:.4f} of its ${limit:g} budget "
            "(proxy.budget_usd); no more requests are forwarded for this run",
        )

    async def _does_not_fit(self, send: Any, run_id: str, limit: float, spent: float,
                            in_flight: float, estimate: budget.Estimate) -> None:
        may_cost = (f"this request may cost up to ${estimate.usd:.4f} (~{estimate.input_tokens}"
                    f" input tokens and half of max_tokens={estimate.max_tokens} at "
                    f"{estimate.model or 'an unknown model'}'s prices)")
        if spent + estimate.usd <= limit:
            # It fits once the requests in flight are settled: the client retries (429).
            log.info("deferred: run %s has $%.4f reserved in flight", run_id, in_flight)
            await send_error(
                send, "rate_limit_error",
                f"ml-agent proxy: run {run_id} has ${limit - spent:.4f} of its budget left, "
                f"${in_flight:.4f} of it reserved by requests in flight, and {may_cost}; "
                "retry when they end", status=429,
                headers={"retry-after": "1", "x-should-retry": "true"})
            return
        log.info("refused: run %s cannot fit a request in its budget", run_id)
        await send_error(
            send, "billing_error",
            f"ml-agent proxy: run {run_id} has ${max(limit - spent, 0):.4f} left of its "
            f"${limit:g} budget (proxy.budget_usd) and {may_cost}; lower max_tokens or "
            "raise the budget")

    async def _read_body(self, scope: Scope, receive: Any, send: Any) -> bytes | None:
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        too_big = declared is not None and declared.isdigit() and int(declared) > self.max_body
        chunks: list[bytes] = []
        size = 0
        more = True
        deadline = anyio.current_time() + self.body_timeout
        while more:
            with anyio.move_on_after(deadline - anyio.current_time()) as waiting:
                message = await receive()
            if waiting.cancelled_caught:
                await send_error(send, "invalid_request_error",
                                 f"request body not received within {self.body_timeout:g} s",
                                 status=408)
                return None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size > self.max_body:
                too_big = True
            elif not too_big:
                chunks.append(chunk)
            if too_big and size > 4 * self.max_body:
                break  # stop draining: answer now, the server closes the connection
        if too_big:
            await send_error(send, "request_too_large",
                             f"request body larger than {self.max_body} bytes")
            return None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    # -- Forwarding ------------------------------------------------------------------------
    def _request(self, scope: Scope, api_path: str, body: bytes) -> httpx.Request:
        drop = DROP_REQUEST
        for name, value in scope["headers"]:
            if name == b"connection":  # names more hop-by-hop headers
                drop = drop | {v.strip().lower() for v in value.split(b",")}
        headers = [(k, v) for k, v in scope["headers"] if k not in drop]
        headers.append((b"x-api-key", self._key))
        accepted = next((v for k, v in scope["headers"] if k == b"accept-encoding"), None)
        if accepted:
            # Only encodings the meter can read (content-encoding still passes through).
            offered = [e for e in accepted.decode("latin-1").split(",")
                       if e.split(";")[0].strip().lower() in self._encodings]
            if offered:
                headers.append((b"accept-encoding", ",".join(offered).strip().encode()))
        query = scope.get("query_string", b"")
        url = self._urls.get((api_path, query))
        if url is None:
            # Parsing a URL is a good part of building an httpx request; the allowed paths
            # are few and clients send the same query (?beta=true) every time.
            url = httpx.URL(self.upstream + api_path
                            + ("?" + query.decode("latin-1") if query else ""))
            if len(self._urls) < 64:
                self._urls[(api_path, query)] = url
        content = body if body or scope["method"] not in ("GET", "HEAD") else None
        return httpx.Request(scope["method"], url, headers=headers, content=content,
                             extensions={"timeout": self._timeouts})

    async def _forward(self, scope: Scope, receive: Any, send: Any, run_id: str,
                       api_path: str, body: bytes, estimate: budget.Estimate | None) -> None:
        request = self._request(scope, api_path, body)
        metered = _Metered(run_id, api_path == "/v1/messages", estimate)
        started = time.monotonic()
        try:
            # The client going away cancels the exchange, which closes upstream. A plain
            # task watching for it, not an anyio task group: same cancel scope semantics
            # (shielded clean-up stays shielded) at a third of the CPU per request.
            with anyio.CancelScope() as exchange:
                watcher = asyncio.get_running_loop().create_task(
                    _watch_disconnect(receive, exchange))
                try:
                    await self._exchange(send, request, api_path, metered)
                finally:
                    watcher.cancel()
        finally:
            if not metered.recorded:
                with anyio.CancelScope(shield=True):
                    await self._settle(metered)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("run %s %s %s: %s in %.3fs, usage %s", run_id, scope["method"],
                          api_path, metered.outcome, time.monotonic() - started, metered.usage)

    async def _exchange(self, send: Any, request: httpx.Request, api_path: str,
                        metered: _Metered) -> None:
        try:
            with anyio.fail_after(self.header_timeout):
                response = await self._wire.handle_async_request(request)
        except TimeoutError:
            metered.outcome = "504 no response headers in time"
            await self._settle(metered)
            await send_error(send, "timeout_error",
                             "the Anthropic API sent no response in time", status=504)
            return
        except httpx.TransportError as exc:
            log.warning("upstream unreachable: %s", type(exc).__name__)
            metered.outcome = "502 upstream unreachable"
            metered.sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
            await self._settle(metered)
            await send_error(send, "api_error",
                             "ml-agent proxy could not reach the Anthropic API", status=502)
            return
        try:
            drop = HOP_BY_HOP
            for value in response.headers.get_list("connection"):
                drop = drop | {v.strip().lower().encode() for v in value.split(",")}
            raw = response.headers.raw
            headers = [(k.lower(), v) for k, v in raw if k.lower() not in drop]
            content_type = response.headers.get("content-type", "")
            metered.status = response.status_code
            if api_path == "/v1/messages":
                metered.meter = Meter(metered.estimate.model if metered.estimate else "",
                                      content_type,
                                      response.headers.get("content-encoding", ""),
                                      response.status_code)
            refused_key = (response.status_code in (401, 403)
                           and self.on_upstream_auth_error is not None)
            metered.outcome = f"{response.status_code} broken off"
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": headers})
            last = b"\n\n"
            feed = metered.meter.feed if metered.meter is not None else None
            head = _Head(feed) if refused_key else None
            if head is not None:
                feed = head
            # The transport's stream itself rather than response.aiter_raw(): one layer less
            # on every read (nothing here needs aiter_raw's chunk sizing or byte count).
            stream = response.stream
            assert isinstance(stream, httpx.AsyncByteStream)
            try:
                async for chunk in stream:
                    if feed is not None:
                        feed(chunk)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    last = chunk
            except httpx.TransportError as exc:
                # Upstream broke off: end the client's stream now, visibly incomplete (an SSE
                # error event when at an event boundary, then no terminating chunk).
                log.warning("upstream stream broke off: %s", type(exc).__name__)
                if content_type.startswith("text/event-stream") and last.endswith(b"\n\n"):
                    await send({"type": "http.response.body", "more_body": True,
                                "body": sse_error_event("api_error",
                                                        "upstream connection lost")})
                return
            metered.outcome = f"{response.status_code}"
            # Usage lands before the client sees the end of the answer.
            await self._settle(metered)
            await send({"type": "http.response.body", "body": b""})
            if head is not None:
                self._key_refused(response.status_code, head)
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()

    # -- Usage -----------------------------------------------------------------------------
    async def _run_totals(self, run_id: str) -> dict[str, float]:
        totals = self._totals.get(run_id)
        if totals is None:
            sink = self.usage_sink
            totals = sink.get(run_id) if self._usage_inline else await anyio.to_thread.run_sync(
                sink.get, run_id)
            totals = self._keep_newest(run_id, totals)
        return totals

    def _keep_newest(self, run_id: str, totals: dict[str, float]) -> dict[str, float]:
        """Cache the run's totals unless those cached are newer (more requests counted).

        With a store behind the network (on Modal), answers overtake each other: a read
        that a record overtook, or a record answered after a later one, is older than what
        is cached, and replacing it hid requests' cost from the budget until the next
        record."""
        cached = self._totals.get(run_id)
        if cached is None or totals.get("requests", 0) >= cached.get("requests", 0):
            self._totals[run_id] = cached = totals
        return cached

    async def _settle(self, metered: _Metered) -> None:
        metered.recorded = True
        meter = metered.meter
        if meter is not None:
            metered.usage = meter.usage()
        if metered.messages and metered.sent and (meter is None or not meter.complete):
            metered.usage = _conservative(metered)
        await self._record(metered.run_id, metered.usage)

    async def _record(self, run_id: str, usage: dict[str, float]) -> None:
        """Add `usage` (and the run's usage not recorded yet) to the store, or keep it.

        Shielded: a client hanging up during a retry must not lose the record. Pending
        usage stays in the ledger (counted against the budget) until the store has it."""
        with anyio.CancelScope(shield=True):
            pending = {}
            if run_id not in self._flushing:
                pending = dict(self.ledger.unrecorded.get(run_id) or {})
            combined = {k: usage.get(k, 0) + pending.get(k, 0) for k in usage.keys() | pending}
            if not combined:
                return
            if pending:
                self._flushing.add(run_id)  # a concurrent record must not write them too
            try:
                if await self._add(run_id, combined):
                    if pending:
                        self.ledger.forget_unrecorded(run_id, pending)
                    return
            finally:
                if pending:
                    self._flushing.discard(run_id)
            self.ledger.keep_unrecorded(run_id, usage)
            if not self._closing and (self._flusher is None or self._flusher.done()):
                self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _add(self, run_id: str, usage: dict[str, float]) -> bool:
        """The store's add, retried; whether it took it."""
        sink = self.usage_sink
        for attempt in range(RECORD_TRIES):
            try:
                if self._usage_inline:
                    self._totals[run_id] = sink.add(run_id, usage)
                else:
                    self._keep_newest(run_id, await anyio.to_thread.run_sync(
                        sink.add, run_id, usage))
                return True
            except Exception:
                if attempt + 1 < RECORD_TRIES:
                    log.warning("recording usage for run %s failed; retrying", run_id)
                    await anyio.sleep(RECORD_BACKOFF * 4**attempt)
                else:
                    log.exception("could not record usage for run %s; it is kept in memory, "
                                  "counted against the budget and written later", run_id)
        return False

    async def _flush(self) -> None:
        """Every `flush_every` s, write the usage kept in memory, until none is left."""
        while self.ledger.unrecorded:
            await anyio.sleep(self.flush_every)
            for run_id in list(self.ledger.unrecorded):
                await self._record(run_id, {})

    def _key_refused(self, status: int, head: _Head) -> None:
        """The upstream refused our key: tell the collaborator (it may end the run)."""
        kind, message = head.error()
        log.error("the upstream refused the API key: %s %s: %s", status, kind, message)
        assert self.on_upstream_auth_error is not None
        try:
            self.on_upstream_auth_error(status, kind, message)
        except Exception:
            log.exception("the upstream-auth-error callback failed")


async def _watch_disconnect(receive: Any, exchange: anyio.CancelScope) -> None:
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    except Exception:  # the server's receive failing: nothing left to watch
        log.debug("receive failed while watching for a disconnect", exc_info=True)
        return
    exchange.cancel()


class _Metered:
    """One forwarded request's metering state."""

    __slots__ = ("run_id", "messages", "estimate", "meter", "usage", "recorded", "outcome",
                 "sent", "status")

    def __init__(self, run_id: str, messages: bool, estimate: budget.Estimate | None) -> None:
        self.run_id = run_id
        self.messages = messages  # a Messages request (the others cost nothing)
        self.estimate = estimate
        self.meter: Meter | None = None
        self.usage: dict[str, float] = {"requests": 1}
        self.recorded = False
        self.outcome = "client went away"
        self.sent = True  # the upstream may have received it (and bills it)
        self.status: int | None = None  # the upstream's answer, once its head arrived


def _conservative(metered: _Metered) -> dict[str, float]:
    """A Messages request whose final usage never arrived (the client hung up, the upstream
    broke off or went silent): what was streamed (metering.py) and at least its input; an
    answer not streamed is counted at its reservation (budget.py): it may have been
    generated whole. An error answer (not 200) costs nothing."""
    usage = metered.usage
    estimate = metered.estimate
    if estimate is None or (metered.status is not None and metered.status != 200):
        return usage
    floor = estimate.input_usd() if estimate.stream else estimate.usd
    if usage.get("cost_usd", 0.0) < floor:
        usage = {**usage, "cost_usd": floor, "estimated_requests": 1}
    return usage


class _Head:
    """Feeds the meter and keeps the first 4 KB of an error answer (its message)."""

    __slots__ = ("feed", "data")

    def __init__(self, feed: Callable[[bytes], None] | None) -> None:
        self.feed = feed
        self.data = b""

    def __call__(self, chunk: bytes) -> None:
        if len(self.data) < 4096:
            self.data += chunk[: 4096 - len(self.data)]
        if self.feed is not None:
            self.feed(chunk)

    def error(self) -> tuple[str, str]:
        try:
            error = json.loads(self.data)["error"]
            return str(error.get("type", "")), str(error.get("message", ""))[:300]
        except (ValueError, KeyError, TypeError, AttributeError):
            return "", ""


async def _json(send: Any, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def create_app(**kwargs: Any) -> Any:
    """The proxy as a Starlette app. Arguments: those of `AnthropicProxy`, notably

    upstream: base URL (may carry a path prefix), e.g. `https://api.anthropic.com`.
        It comes with `api_key`, which is sent nowhere else: the config layer only allows
        an upstream other than Anthropic's together with its own key secret.
    api_key: the real Anthropic key (injected as x-api-key).
    tokens / usage: the token store and usage sink (ml_agent.contracts Protocols).
    transport: an httpx transport (tests, or a custom pool); clock: wall clock for expiry.
    allowed_paths, max_body, header_timeout, read_timeout, prefix (where it is mounted).
    on_upstream_auth_error: called with (status, error type, message) when the upstream
        refuses the key (401/403), e.g. to end the run at once (the local supervisor does).
    environ: where HTTPS_PROXY / NO_PROXY / SSL_CERT_FILE / SSL_CERT_DIR are read (default
        os.environ); a proxy for the upstream means httpx's own transport.

    The app's lifespan closes the upstream connections; when it is mounted inside another
    app (whose lifespan runs instead), call `await app.state.proxy.aclose()` at shutdown.
    """
    from starlette.applications import Starlette
    from starlette.routing import Mount

    proxy = AnthropicProxy(**kwargs)

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        yield
        await proxy.aclose()

    app = Starlette(routes=[Mount("/", app=proxy)], lifespan=lifespan)
    app.state.proxy = proxy
    return app
