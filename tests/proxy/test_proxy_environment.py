"""The environment a user behind a corporate proxy has: HTTPS_PROXY / NO_PROXY, and a
TLS-inspecting CA in SSL_CERT_FILE / SSL_CERT_DIR."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from ml_agent.proxy.wire import Http11Transport, env_proxy
from tests.fakes.anthropic import text
from tests.proxy.test_proxy_wire import CHUNKED, Server, fetch, run

STREAM = {"model": "claude-sonnet-4-5", "max_tokens": 10, "stream": True, "messages": []}


class ForwardProxy:
    """An HTTP proxy on 127.0.0.1 (absolute-form requests and CONNECT tunnels) in a thread;
    `seen` lists (method, target) of what it was asked."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        self._thread.start()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, version = head.split(b"\r\n", 1)[0].decode().split(" ")
            self.seen.append((method, target))
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                up_reader, up_writer = await asyncio.open_connection(host, int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                url = urlsplit(target)
                up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port)
                origin_form = url.path + (f"?{url.query}" if url.query else "")
                up_writer.write(f"{method} {origin_form} {version}\r\n".encode()
                                + head.split(b"\r\n", 1)[1])
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        stop_loop(self._loop, self._thread, self._server)


def stop_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread,
              server: asyncio.Server) -> None:
    """Close a server running on a loop in a thread, cancel what it runs, close the loop."""

    async def shutdown() -> None:
        server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.2)  # let the transports (TLS shutdowns too) close

    asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.fixture
def forward_proxy() -> Iterator[ForwardProxy]:
    proxy = ForwardProxy()
    yield proxy
    proxy.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"HTTPS_PROXY": "http://p:3128"}, "http://p:3128"),
        ({"https_proxy": "http://p:3128"}, "http://p:3128"),
        ({"ALL_PROXY": "http://p:3128"}, "http://p:3128"),
        ({"HTTP_PROXY": "http://p:3128"}, None),  # not for an https upstream
        ({"HTTPS_PROXY": "http://p", "NO_PROXY": "anthropic.com"}, None),
        ({"HTTPS_PROXY": "http://p", "NO_PROXY": ".anthropic.com"}, None),
        ({"HTTPS_PROXY": "http://p", "no_proxy": "localhost, *"}, None),
        ({"HTTPS_PROXY": "http://p", "NO_PROXY": "api.anthropic.com:443"}, None),
        ({"HTTPS_PROXY": "http://p", "NO_PROXY": "api.anthropic.com:8443"}, "http://p"),
        ({"HTTPS_PROXY": "http://p", "NO_PROXY": "thropic.com"}, "http://p"),
    ],
)
def test_which_proxy_the_environment_names(env, expected):
    assert env_proxy("https://api.anthropic.com", env) == expected


def test_the_upstream_is_reached_through_the_environment_proxy(forward_proxy, make_proxy, http):
    proxied = make_proxy(environ={"HTTP_PROXY": forward_proxy.url})
    proxied.fake.script(text("through the proxy"))
    response = http.post(proxied.url + "/v1/messages", json=STREAM,
                         headers={"x-api-key": proxied.token()})
    assert response.status_code == 200 and "through" in response.text
    assert forward_proxy.seen == [("POST", proxied.fake.url + "/v1/messages")]
    assert proxied.usage.get("run-1")["output_tokens"] == 20  # metered as ever


def test_no_proxy_exempts_the_upstream(forward_proxy, make_proxy, http):
    proxied = make_proxy(environ={"HTTP_PROXY": forward_proxy.url, "NO_PROXY": "127.0.0.1"})
    response = http.post(proxied.url + "/v1/messages", json=STREAM,
                         headers={"x-api-key": proxied.token()})
    assert response.status_code == 200
    assert forward_proxy.seen == []


@pytest.fixture(scope="module")
def corporate_ca(tmp_path_factory) -> tuple[str, str, str]:
    """A self-signed certificate for 127.0.0.1 (cert, key) and a hashed CA folder with it."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("ca")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    certs = folder / "certs"
    certs.mkdir()
    shutil.copy(cert, certs / "ca.pem")
    subprocess.run(["openssl", "rehash", str(certs)], check=True, capture_output=True)
    return cert, key, str(certs)


@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "SSL_CERT_DIR"])
def test_a_ca_named_by_the_environment_is_trusted(corporate_ca, variable):
    cert, key, certs = corporate_ca
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    env = {"SSL_CERT_FILE": cert} if variable == "SSL_CERT_FILE" else {"SSL_CERT_DIR": certs}

    async def main():
        server = Server([CHUNKED])
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=context)
        url = f"https://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
        try:
            async with httpx.AsyncClient(transport=Http11Transport(env=env)) as client:
                _, pieces = await fetch(client, url)
                assert b"".join(pieces) == b"hello world"
            async with httpx.AsyncClient(transport=Http11Transport(env={})) as client:
                with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                    await fetch(client, url)
        finally:
            listener.close()

    run(main())


def test_https_proxy_with_a_corporate_ca_end_to_end(forward_proxy, make_proxy, http,
                                                    corporate_ca):
    """HTTPS_PROXY (a CONNECT tunnel) and SSL_CERT_FILE together, through the whole proxy."""
    cert, key, _ = corporate_ca
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    body = b'{"type": "message", "model": "claude-sonnet-4-5", "usage": {"output_tokens": 7}}'
    answer = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
              b"content-length: %d\r\n\r\n%s" % (len(body), body))
    loop = asyncio.new_event_loop()
    server = Server([answer], close_after=1)
    listener = loop.run_until_complete(
        asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=context))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        upstream = f"https://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
        proxied = make_proxy(upstream=upstream,
                             environ={"HTTPS_PROXY": forward_proxy.url, "SSL_CERT_FILE": cert})
        response = http.post(proxied.url + "/v1/messages", json={**STREAM, "stream": False},
                             headers={"x-api-key": proxied.token()})
        assert response.status_code == 200, response.text
        assert forward_proxy.seen == [("CONNECT", upstream.removeprefix("https://"))]
        assert proxied.usage.get("run-1")["output_tokens"] == 7
    finally:
        stop_loop(loop, thread, listener)
