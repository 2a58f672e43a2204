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
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator

import httpx

READ_SIZE = 65536
MAX_HEAD = 64 * 1024
NO_BODY_STATUS = {204, 304}


def _ssl_context(verify: bool) -> ssl.SSLContext:
    if not verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:  # pragma: no cover - httpx depends on certifi
        return ssl.create_default_context()


class _Conn:
    __slots__ = ("reader", "writer", "idle_since")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def alive(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def abort(self) -> None:
        self.writer.transport.abort()


class Http11Transport(httpx.AsyncBaseTransport):
    """httpx transport: `httpx.AsyncClient(transport=Http11Transport())`."""

    def __init__(self, *, verify: bool = True, max_idle: int = 64,
                 idle_expiry: float = 60.0) -> None:
        self._verify = verify
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
                self._ssl = _ssl_context(self._verify)
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

    def _take_idle(self, origin: tuple[str, str, int]) -> _Conn | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if conn.alive() and time.monotonic() - conn.idle_since < self._idle_expiry:
                return conn
            conn.abort()
        return None

    def _release(self, origin: tuple[str, str, int], conn: _Conn) -> None:
        idle = self._idle.setdefault(origin, [])
        if len(idle) >= self._max_idle or not conn.alive():
            conn.abort()
            return
        conn.idle_since = time.monotonic()
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
        conn = self._take_idle(origin) or await self._connect(origin, timeouts.get("connect"))
        try:
            conn.writer.write(payload)
            async with asyncio.timeout(timeouts.get("write")):
                await conn.writer.drain()
            status, reason, headers = await _read_head(conn.reader, read_timeout)
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

        framing, length, keep_alive = _framing(request.method, status, headers)
        stream = _Body(self, origin, conn, framing, length, keep_alive, read_timeout)
        return httpx.Response(status, headers=headers, stream=stream,
                              extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason})


async def _read_head(
    reader: asyncio.StreamReader, timeout: float | None
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    while True:
        async with asyncio.timeout(timeout):
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                raise httpx.RemoteProtocolError("upstream response head too large") from None
        if not head:
            raise EOFError
        lines = head[:-4].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise httpx.RemoteProtocolError("upstream sent something other than HTTP/1.1")
        status = int(parts[1])
        if 100 <= status < 200:
            continue  # interim answers (100 Continue...)
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise httpx.RemoteProtocolError("malformed upstream header")
            headers.append((name, value.strip()))
        return status, parts[2] if len(parts) > 2 else b"", headers


def _framing(
    method: str, status: int, headers: list[tuple[bytes, bytes]]
) -> tuple[str, int, bool]:
    """('none' | 'chunked' | 'length' | 'close', content length, keep-alive)."""
    keep_alive = True
    chunked = False
    length = None
    for name, value in headers:
        lower = name.lower()
        if lower == b"transfer-encoding":
            chunked = value.lower().split(b",")[-1].strip() == b"chunked"
        elif lower == b"content-length":
            if not value.isdigit():
                raise httpx.RemoteProtocolError("bad upstream Content-Length")
            length = int(value)
        elif lower == b"connection" and b"close" in value.lower():
            keep_alive = False
    if method == "HEAD" or status in NO_BODY_STATUS:
        return "none", 0, keep_alive
    if chunked:
        return "chunked", 0, keep_alive
    if length is not None:
        return "length", length, keep_alive
    return "close", 0, False


class _Silent(Exception):
    """Set on a connection's reader by the read watchdog: no data within the read timeout."""


class _Body(httpx.AsyncByteStream):
    """The response body as it arrives: one bytes object per socket read.

    The read timeout is a watchdog timer armed once and re-armed only when it fires, not
    an `asyncio.timeout()` per read: that costs a timer set up and torn down on every
    read, and an answer whose events arrive one by one is hundreds of reads.
    """

    def __init__(self, transport: Http11Transport, origin: tuple[str, str, int], conn: _Conn,
                 framing: str, length: int, keep_alive: bool, timeout: float | None) -> None:
        self._transport = transport
        self._origin = origin
        self._conn: _Conn | None = conn
        self._framing = framing
        self._length = length
        self._keep_alive = keep_alive
        self._timeout = timeout
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
        while remaining > 0:
            data = await self._read()
            if not data:
                raise self._incomplete()
            if len(data) > remaining:
                raise httpx.RemoteProtocolError("upstream sent more than Content-Length")
            remaining -= len(data)
            yield data
        self._finish()

    async def _until_close(self) -> AsyncIterator[bytes]:
        if self._framing == "close":
            while data := await self._read():
                yield data
        self._finish()

    async def _chunked(self) -> AsyncIterator[bytes]:
        # Per chunk, the common case (size line, payload and CRLF all in the buffer) is one
        # find, one int() and one slice: an SSE answer is hundreds of chunks. A chunk split
        # across reads falls back to the `remaining` / `crlf` states.
        buf = b""
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
                        if pos != end:
                            raise httpx.RemoteProtocolError("data after the chunked body")
                        if out:
                            yield b"".join(out)
                        self._finish()
                        return
                    continue
                if not line.isalnum():  # chunk extensions or padding (isalnum: no sign, _)
                    line = line.split(b";", 1)[0].strip()
                    if not line.isalnum():
                        raise httpx.RemoteProtocolError("malformed chunk size")
                try:
                    size = int(line, 16)
                except ValueError:
                    raise httpx.RemoteProtocolError("malformed chunk size") from None
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
        # Bytes beyond the body would be read as the next answer's head: never reuse then.
        if self._keep_alive and not conn.reader._buffer:  # type: ignore[attr-defined]
            self._transport._release(self._origin, conn)
        else:
            conn.abort()

    async def aclose(self) -> None:
        """Before the end of the body: drop the connection (the upstream sees it close)."""
        self._disarm()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()


__all__ = ["Http11Transport"]
