"""The proxy's HTTP/1.1 transport against a scripted raw server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest

from ml_agent.proxy.wire import Http11Transport

CHUNKED = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
           b"transfer-encoding: chunked\r\nrequest-id: req_1\r\n\r\n"
           b"5;ext=1\r\nhello\r\n1\r\n \r\n"
           b"5\r\nworld\r\n0\r\nx-trailer: 1\r\n\r\n")


class Server:
    """Answers each request on a connection with the next scripted response bytes."""

    def __init__(self, responses: list[bytes], *, step: int = 0, close_after: int = 0):
        self.responses = list(responses)
        self.step = step  # write the response in pieces of this size (0: at once)
        self.close_after = close_after  # close each connection after n answers (0: never)
        self.connections = 0
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.connections += 1
        answered = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                self.requests.append(head + await reader.readexactly(length))
                data = self.responses.pop(0)
                step = self.step or len(data)
                for i in range(0, len(data), step):
                    writer.write(data[i : i + step])
                    await writer.drain()
                    if self.step:
                        await asyncio.sleep(0)
                answered += 1
                if self.close_after and answered >= self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def serving(server: Server) -> AsyncIterator[str]:
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        listener.close()


async def fetch(client: httpx.AsyncClient, url: str) -> tuple[httpx.Response, list[bytes]]:
    async with client.stream("POST", url + "/v1/messages?beta=true", content=b"{}") as r:
        pieces = [piece async for piece in r.aiter_raw()]
    return r, pieces


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("step", [0, 1, 3, 7])
def test_chunked_bodies_however_they_arrive_and_connections_are_reused(step):
    async def main():
        server = Server([CHUNKED, CHUNKED], step=step)
        async with serving(server) as url, httpx.AsyncClient(transport=Http11Transport()) as c:
            for _ in range(2):
                response, pieces = await fetch(c, url)
                assert response.status_code == 200
                assert response.headers["request-id"] == "req_1"
                assert b"".join(pieces) == b"hello world"
        assert server.connections == 1
        assert server.requests[0].startswith(b"POST /v1/messages?beta=true HTTP/1.1\r\n")
        assert b"\r\ncontent-length: 2\r\n" in server.requests[0].lower()

    run(main())


def test_many_chunks_in_one_read_come_out_as_one_piece():
    body = b"".join(b"3\r\nabc\r\n" for _ in range(200)) + b"0\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"

    async def main():
        async with serving(Server([head + body])) as url, httpx.AsyncClient(
                transport=Http11Transport()) as client:
            _, pieces = await fetch(client, url)
            assert b"".join(pieces) == b"abc" * 200
            assert len(pieces) <= 3

    run(main())


@pytest.mark.parametrize(
    ("response", "body", "reused"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", b"hello", True),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b"", True),
        (b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok", b"ok", False),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
         b"ok", True),
    ],
    ids=["length", "no-content", "connection-close", "interim"],
)
def test_other_framings(response, body, reused):
    async def main():
        server = Server([response, response])
        async with serving(server) as url, httpx.AsyncClient(
                transport=Http11Transport()) as client:
            for _ in range(2):
                _, pieces = await fetch(client, url)
                assert b"".join(pieces) == body
        assert server.connections == (1 if reused else 2)

    run(main())


def test_read_until_close():
    async def main():
        server = Server([b"HTTP/1.1 200 OK\r\n\r\nall of it"], close_after=1)
        async with serving(server) as url, httpx.AsyncClient(
                transport=Http11Transport()) as client:
            _, pieces = await fetch(client, url)
            assert b"".join(pieces) == b"all of it"

    run(main())


def test_a_connection_the_server_closed_is_not_reused():
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

    async def main():
        server = Server([ok, ok], close_after=1)  # closes each connection after one answer
        async with serving(server) as url, httpx.AsyncClient(
                transport=Http11Transport()) as client:
            for _ in range(2):
                response, pieces = await fetch(client, url)
                await asyncio.sleep(0.05)  # let the close arrive
                assert b"".join(pieces) == b"ok"
        assert server.connections == 2

    run(main())


@pytest.mark.parametrize(
    "response",
    [
        CHUNKED[:-20],  # cut inside the body
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello",
        # chunk sizes int() would take but HTTP does not: signed, underscored, empty
        *(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + size
          + b"\r\nhello\r\n0\r\n\r\n" for size in (b"-5", b"+5", b"0_5", b"")),
    ],
    ids=["truncated", "bad-size", "short", "size-minus", "size-plus", "size-underscore",
         "size-empty"],
)
def test_broken_bodies_raise_protocol_errors(response):
    async def main():
        async with serving(Server([response], close_after=1)) as url, httpx.AsyncClient(
                transport=Http11Transport()) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await fetch(client, url)

    run(main())


def test_unreachable_is_a_connect_error():
    async def main():
        listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        listener.close()
        await listener.wait_closed()
        async with httpx.AsyncClient(transport=Http11Transport()) as client:
            with pytest.raises(httpx.ConnectError):
                await fetch(client, f"http://127.0.0.1:{port}")

    run(main())


def test_the_proxy_also_runs_on_httpx_default_transport(make_proxy, http):
    from tests.fakes.anthropic import text

    proxied = make_proxy(transport=httpx.AsyncHTTPTransport())
    proxied.fake.script(text("via httpcore", n_text_deltas=5))
    response = http.post(proxied.url + "/v1/messages", headers={"x-api-key": proxied.token()},
                         json={"model": "claude-sonnet-4-5", "stream": True, "messages": []})
    assert response.status_code == 200
    assert "via httpcore"[:3] in response.text
    assert proxied.usage.get("run-1")["output_tokens"] == 20


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory) -> tuple[str, str]:
    import shutil
    import subprocess

    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


@pytest.mark.parametrize("verify", [False, True])
def test_tls_upstreams_are_verified(self_signed, verify):
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*self_signed)

    async def main():
        server = Server([CHUNKED, CHUNKED])
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=context)
        url = f"https://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
        try:
            async with httpx.AsyncClient(transport=Http11Transport(verify=verify)) as client:
                if verify:  # a certificate no public CA signed
                    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                        await fetch(client, url)
                    return
                for _ in range(2):
                    _, pieces = await fetch(client, url)
                    assert b"".join(pieces) == b"hello world"
            assert server.connections == 1
        finally:
            listener.close()

    run(main())


@pytest.mark.parametrize("framing", ["chunked", "length"])
def test_an_upstream_that_goes_silent_mid_body_is_a_read_timeout(framing):
    head = (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"
            if framing == "chunked" else b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello")

    async def main():
        server = Server([head])  # then nothing more, connection kept open
        timeout = httpx.Timeout(5.0, read=0.3)
        async with serving(server) as url, httpx.AsyncClient(
                transport=Http11Transport(), timeout=timeout) as client:
            pieces: list[bytes] = []
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(httpx.ReadTimeout):
                async with client.stream("POST", url + "/v1/messages", content=b"{}") as r:
                    async for piece in r.aiter_raw():
                        pieces.append(piece)
            assert b"".join(pieces) == b"hello"
            assert 0.25 < loop.time() - started < 2.0

    run(main())
