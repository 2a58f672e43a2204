"""A lean HTTP/1.1 transport for httpx: the proxy's upstream wire, parsed a buffer at a time.

Why: measured in bench/proxy_overhead.py, httpx's default transport (httpcore + h11)
spends ~25 µs of CPU per HTTP chunk, and an SSE answer is hundreds of small chunks: more than
half of the proxy's CPU per request. This transport keeps httpx's API and semantics (the
proxy still builds httpx requests and reads httpx responses, and raises httpx exceptions)
but parses chunked bodies a socket read at a time, so each read costs a few slices and
yields one piece of bytes, however many chunks it carries.

Scope (all the proxy needs): HTTP/1.1 over TCP or TLS, keep-alive pooling per origin,
Content-Length / chunked / read-until-close bodies, connect and read timeouts. No
retries: a request is sent at most once.

Strictness: the response head (status line, headers, Content-Length and Transfer-Encoding
rules) is parsed by h11 itself, once per response; the body framing is checked as strictly
as h11 does (chunk sizes, extensions, the CRLF after each chunk, trailers), and
tests/proxy/test_wire_fuzz.py compares every decision with h11's. A connection is reused
only after a clean HTTP/1.1 keep-alive answer with nothing after it: bytes beyond the body,
bytes or EOF arriving while it is idle, Connection: close, HTTP/1.0, or both
Transfer-Encoding and Content-Length each close it.
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

import h11
import httpx

READ_SIZE = 65536
MAX_HEAD = 64 * 1024
NO_BODY_STATUS = {204, 304}


def ssl_context(verify: bool, env: Mapping[str, str] | None = None) -> ssl.SSLContext:
    """Certificates from SSL_CERT_FILE / SSL_CERT_DIR when set (a TLS-inspecting corporate
    CA, as OpenSSL and httpx read them), else certifi's."""
    if not verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    env = os.environ if env is None else env
    cafile, capath = env.get("SSL_CERT_FILE") or None, env.get("SSL_CERT_DIR") or None
    if cafile or capath:
        return ssl.create_default_context(cafile=cafile, capath=capath)
    try:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:  # pragma: no cover - httpx depends on certifi
        return ssl.create_default_context()


# A chunk-size line (h11's chunk_header without its CRLF, and no CR/LF in extensions) and a
# header line (h11's header_field) for trailers.
CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;[^\r\n]*)?[ \t]*")
_VCHAR = rb"[^\x00\s]"
HEADER_LINE = re.compile(
    rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+:[ \t]*(?:" + _VCHAR + rb"+(?:[ \t]+" + _VCHAR
    + rb"+)*)?[ \t]*")


def env_proxy(url: str, env: Mapping[str, str] | None = None) -> str | None:
    """The proxy the environment names for `url` (HTTPS_PROXY / HTTP_PROXY / ALL_PROXY, any
    case), or None when there is none or NO_PROXY exempts its host (`*`, a host, a domain
    with or without a leading dot, or host:port)."""
    env = os.environ if env is None else env
    parts = urlsplit(url)
    scheme, host = parts.scheme, (parts.hostname or "").lower()
    port = parts.port or (443 if scheme == "https" else 80)

    def get(name: str) -> str:
        return env.get(name.lower()) or env.get(name.upper()) or ""

    proxy = get(f"{scheme}_proxy") or get("all_proxy")
    if not proxy:
        return None
    for entry in get("no_proxy").replace(" ", "").lower().split(","):
        if not entry:
            continue
        if entry == "*":
            return None
        name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if entry_port and entry_port != str(port):
            continue
        name = name.lstrip(".")
        if host == name or host.endswith("." + name):
            return None
    return proxy


class _Conn:
    __slots__ = ("reader", "writer", "idle_since", "watch")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0
        # While idle, a read is pending: anything it gets (bytes or EOF) retires the
        # connection (the public alternative to peeking at the reader's buffer).
        self.watch: asyncio.Task[bytes] | None = None

    def alive(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def abort(self) -> None:
        if self.watch is not None:
            self.watch.cancel()
            self.watch = None
        self.writer.transport.abort()


class Http11Transport(httpx.AsyncBaseTransport):
    """httpx transport: `httpx.AsyncClient(transport=Http11Transport())`."""

    def __init__(self, *, verify: bool = True, max_idle: int = 64,
                 idle_expiry: float = 60.0, env: Mapping[str, str] | None = None) -> None:
        self._verify = verify
        self._env = env
        self._ssl: ssl.SSLContext | None = None
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._max_idle = max_idle
        self._idle_expiry = idle_expiry

    # -- Connections -----------------------------------------------------------------------
    async def _connect(self, origin: tuple[str, str, int], timeout: float | None) -> _Conn:
        scheme, host, port = origin
        context = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl_context(self._verify, self._env)
            context = self._ssl
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=context, server_hostname=host if context else None,
                    limit=MAX_HEAD)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}") from None
        return _Conn(reader, writer)

    async def _take_idle(self, origin: tuple[str, str, int]) -> _Conn | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            watch, conn.watch = conn.watch, None
            if (watch is not None and not watch.done() and conn.alive()
                    and time.monotonic() - conn.idle_since < self._idle_expiry):
                watch.cancel()
                await asyncio.wait([watch])  # a cancelled read consumes nothing
                if not watch.cancelled():
                    conn.abort()  # it got bytes or EOF in the same instant
                    continue
                return conn
            conn.abort()
        return None

    def idle_connections(self) -> int:
        """How many pooled connections could be reused now (tests check what is reused):
        not those whose idle read already got bytes or EOF."""
        return sum(1 for idle in self._idle.values() for conn in idle
                   if conn.watch is not None and not conn.watch.done() and conn.alive())

    def _release(self, origin: tuple[str, str, int], conn: _Conn) -> None:
        idle = self._idle.setdefault(origin, [])
        if len(idle) >= self._max_idle or not conn.alive():
            conn.abort()
            return
        conn.idle_since = time.monotonic()
        conn.watch = asyncio.get_running_loop().create_task(conn.reader.read(1))
        idle.append(conn)

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
        self._idle.clear()

    # -- Requests --------------------------------------------------------------------------
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        timeouts = request.extensions.get("timeout", {})
        read_timeout = timeouts.get("read")
        body = await request.aread()
        target = url.raw_path.decode("ascii")
        lines = [f"{request.method} {target} HTTP/1.1\r\n".encode()]
        lines += [name + b": " + value + b"\r\n" for name, value in request.headers.raw]
        lines.append(b"\r\n")
        payload = b"".join(lines) + body

        # A POST is never sent twice: an idle connection the server closed is noticed
        # before reuse (EOF already read); one closed in the very same instant answers 502
        # and the client retries, as it would for any 5xx.
        conn = (await self._take_idle(origin)
                or await self._connect(origin, timeouts.get("connect")))
        try:
            conn.writer.write(payload)
            async with asyncio.timeout(timeouts.get("write")):
                await conn.writer.drain()
            status, reason, headers, framing, length, keep_alive, rest = await _read_head(
                conn.reader, request.method, read_timeout)
        except (OSError, EOFError, asyncio.IncompleteReadError) as exc:
            conn.abort()
            raise httpx.RemoteProtocolError(
                f"upstream closed the connection without an answer ({type(exc).__name__})"
            ) from None
        except TimeoutError:
            conn.abort()
            raise httpx.ReadTimeout("upstream sent no answer in time") from None
        except BaseException:
            conn.abort()
            raise

        stream = _Body(self, origin, conn, framing, length, keep_alive, read_timeout, rest)
        return httpx.Response(status, headers=headers, stream=stream,
                              extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason})


async def _read_head(
    reader: asyncio.StreamReader, method: str, timeout: float | None
) -> tuple[int, bytes, list[tuple[bytes, bytes]], str, int, bool, bytes]:
    """Status, reason, headers, framing, length, keep-alive and the body bytes already read.

    h11 parses the head (a few tens of µs, once per response); it is told only the request
    method, which is all the response's framing depends on.
    """
    parser = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
    parser.send(h11.Request(method=method, target="/", headers=[("host", "upstream")]))
    parser.send(h11.EndOfMessage())
    try:
        async with asyncio.timeout(timeout):
            while True:
                event = parser.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(READ_SIZE)
                    if not data and not parser.trailing_data[0]:
                        raise EOFError
                    parser.receive_data(data)
                elif isinstance(event, h11.Response):
                    break
                elif not isinstance(event, h11.InformationalResponse) or event.status_code == 101:
                    raise httpx.RemoteProtocolError("upstream sent something other than HTTP/1.1")
    except h11.RemoteProtocolError as exc:
        raise httpx.RemoteProtocolError(f"malformed upstream response head: {exc}") from None
    headers = list(event.headers.raw_items())
    rest = bytes(parser.trailing_data[0])
    keep_alive = event.http_version == b"1.1"
    chunked = False
    length = None
    for name, value in event.headers:  # normalized: lower-case names, validated values
        if name == b"transfer-encoding":
            chunked = True  # h11 accepts exactly one, "chunked"
        elif name == b"content-length":
            length = int(value)
        elif name == b"connection" and b"close" in value.lower():
            keep_alive = False
    if chunked and length is not None:
        keep_alive = False  # RFC 9112 6.3: a sender of both must not be trusted further
    if method == "HEAD" or event.status_code in NO_BODY_STATUS:
        return event.status_code, event.reason, headers, "length", 0, keep_alive, rest
    if chunked:
        return event.status_code, event.reason, headers, "chunked", 0, keep_alive, rest
    if length is not None:
        return event.status_code, event.reason, headers, "length", length, keep_alive, rest
    return event.status_code, event.reason, headers, "close", 0, False, rest


class _Silent(Exception):
    """Set on a connection's reader by the read watchdog: no data within the read timeout."""


class _Body(httpx.AsyncByteStream):
    """The response body as it arrives: one bytes object per socket read.

    The read timeout is a watchdog timer armed once and re-armed only when it fires, not
    an `asyncio.timeout()` per read: that costs a timer set up and torn down on every
    read, and an answer whose events arrive one by one is hundreds of reads.
    """

    def __init__(self, transport: Http11Transport, origin: tuple[str, str, int], conn: _Conn,
                 framing: str, length: int, keep_alive: bool, timeout: float | None,
                 rest: bytes) -> None:
        self._transport = transport
        self._origin = origin
        self._conn: _Conn | None = conn
        self._framing = framing
        self._length = length
        self._keep_alive = keep_alive
        self._timeout = timeout
        self._rest = rest  # body bytes read with the head
        self._loop = asyncio.get_running_loop()
        self._since: float | None = None  # when the pending read began (None: no read)
        self._watchdog: asyncio.TimerHandle | None = None

    async def _read(self) -> bytes:
        conn = self._conn
        assert conn is not None
        if self._timeout is not None:
            self._since = self._loop.time()
            if self._watchdog is None:
                self._watchdog = self._loop.call_at(self._since + self._timeout, self._check)
        try:
            return await conn.reader.read(READ_SIZE)
        except _Silent:
            raise httpx.ReadTimeout("upstream went silent") from None
        except OSError as exc:
            raise httpx.ReadError(f"upstream read failed: {exc!r}") from None
        finally:
            self._since = None

    def _check(self) -> None:
        """The watchdog: fail the pending read once it has waited the whole timeout."""
        self._watchdog = None
        since, conn = self._since, self._conn
        if since is None or conn is None or self._timeout is None:
            return  # no read pending: the next one re-arms the watchdog
        due = since + self._timeout
        if self._loop.time() >= due:
            conn.reader.set_exception(_Silent())
        else:
            self._watchdog = self._loop.call_at(due, self._check)

    def _disarm(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _incomplete(self) -> httpx.RemoteProtocolError:
        return httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body")

    def __aiter__(self) -> AsyncIterator[bytes]:
        # The generator itself, not one wrapped in another: each extra layer is paid again
        # on every socket read.
        if self._conn is None:
            raise httpx.StreamClosed()
        if self._framing == "chunked":
            return self._chunked()
        if self._framing == "length":
            return self._sized()
        return self._until_close()  # framing "close", or "none" (returns at once)

    async def _sized(self) -> AsyncIterator[bytes]:
        remaining = self._length
        data, self._rest = self._rest, b""
        while True:
            if len(data) > remaining:  # bytes beyond the body: delivered, never reused
                self._keep_alive = False
                data = data[:remaining]
            remaining -= len(data)
            if data:
                yield data
            if remaining <= 0:
                break
            data = await self._read()
            if not data:
                raise self._incomplete()
        self._finish()

    async def _until_close(self) -> AsyncIterator[bytes]:
        data, self._rest = self._rest, b""
        if data:
            yield data
        while data := await self._read():
            yield data
        self._finish()

    async def _chunked(self) -> AsyncIterator[bytes]:
        # Per chunk, the common case (size line, payload and CRLF all in the buffer) is one
        # find, one int() and one slice: an SSE answer is hundreds of chunks. A chunk split
        # across reads falls back to the `remaining` / `crlf` states.
        buf, self._rest = self._rest, b""
        remaining = 0  # payload bytes left in the current chunk
        crlf = False  # a chunk's payload ended: its CRLF comes next
        trailers = False
        while True:
            out = []
            pos = 0
            end = len(buf)
            while pos < end:
                if remaining:
                    take = min(remaining, end - pos)
                    out.append(buf[pos : pos + take])
                    pos += take
                    remaining -= take
                    crlf = remaining == 0
                    continue
                if crlf:
                    if end - pos < 2:
                        break
                    if buf[pos : pos + 2] != b"\r\n":
                        raise httpx.RemoteProtocolError("malformed chunked encoding")
                    pos += 2
                    crlf = False
                    continue
                newline = buf.find(b"\r\n", pos)
                if newline < 0:
                    if end - pos > 4096:
                        raise httpx.RemoteProtocolError("malformed chunked encoding")
                    break
                line = buf[pos:newline]
                pos = newline + 2
                if trailers:
                    if not line:  # the blank line after the trailers: the body is complete
                        if pos != end:  # bytes beyond the body: never reuse
                            self._keep_alive = False
                        if out:
                            yield b"".join(out)
                        self._finish()
                        return
                    if not HEADER_LINE.fullmatch(line):
                        raise httpx.RemoteProtocolError("malformed trailer")
                    continue
                match = CHUNK_SIZE.fullmatch(line)
                if match is None:
                    raise httpx.RemoteProtocolError("malformed chunk size")
                size = int(match[1], 16)
                stop = pos + size
                if size and stop + 2 <= end:  # the whole chunk is here
                    if buf[stop : stop + 2] != b"\r\n":
                        raise httpx.RemoteProtocolError("malformed chunked encoding")
                    out.append(buf[pos:stop])
                    pos = stop + 2
                    continue
                if size == 0:
                    trailers = True
                remaining = size
            buf = buf[pos:] if pos < end else b""
            if out:
                yield out[0] if len(out) == 1 else b"".join(out)
            data = await self._read()
            if not data:
                raise self._incomplete()
            buf = buf + data if buf else data

    def _finish(self) -> None:
        self._disarm()
        conn, self._conn = self._conn, None
        if conn is None:
            return
        # Bytes beyond the body would be read as the next answer's head: never reuse then
        # (the parsers clear _keep_alive when they see any; the pool's idle read catches
        # what arrives later).
        if self._keep_alive:
            self._transport._release(self._origin, conn)
        else:
            conn.abort()

    async def aclose(self) -> None:
        """Before the end of the body: drop the connection (the upstream sees it close)."""
        self._disarm()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()


__all__ = ["Http11Transport", "env_proxy", "ssl_context"]
