"""Usage metering: tokens and cost read from answers as they stream past, without buffering.

SSE answers: only the events that carry `"usage"` (message_start, message_delta) are parsed;
every other chunk costs one substring search. `message_delta.usage` is cumulative, so its
fields replace message_start's. A stream that ends before its final usage (the client hung
up, the upstream broke off) is metered from what was streamed: OUTPUT_BYTES_PER_TOKEN
bytes of event payload per output token, an over-estimate (a token is ~4 characters), so
hanging up early is never cheaper than reading to the end. JSON answers: a copy of the
body (capped) is parsed at the end. Compressed answers are metered through an incremental
decompressor of the copy; the proxy only offers the upstream encodings `decoders()` can
read.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Callable
from typing import Any

from ml_agent.proxy.pricing import cost_usd, server_tool_requests

log = logging.getLogger(__name__)

TOKEN_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)
MAX_JSON_COPY = 16 * 1024 * 1024
MAX_SSE_TAIL = 4 * 1024 * 1024  # a partial event longer than this is not a usage event
# A cut stream's output: its bytes less EVENT_ENVELOPE per event (a text delta's event line
# and JSON around the text are ~110 bytes; counting fewer over-estimates), at 3 bytes per
# token (JSON-escaped text or tool input is ~4 bytes per token).
EVENT_ENVELOPE = 96
OUTPUT_BYTES_PER_TOKEN = 3


def _zlib() -> Callable[[bytes], bytes]:
    return zlib.decompressobj(wbits=32 + zlib.MAX_WBITS).decompress  # gzip or zlib header


def _brotli() -> Callable[[bytes], bytes] | None:
    try:
        import brotli
    except ImportError:
        return None
    decompressor = brotli.Decompressor()
    return getattr(decompressor, "process", None) or decompressor.decompress


def _zstd() -> Callable[[bytes], bytes] | None:
    try:
        import zstandard
    except ImportError:
        return None
    return zstandard.ZstdDecompressor().decompressobj().decompress


_DECODERS: dict[str, Callable[[], Callable[[bytes], bytes] | None]] = {
    "gzip": _zlib,
    "deflate": _zlib,
    "br": _brotli,
    "zstd": _zstd,
}


def decoders() -> tuple[str, ...]:
    """The content encodings the meter can read (offered upstream in Accept-Encoding)."""
    return tuple(name for name, make in _DECODERS.items() if make() is not None)


class Meter:
    """Reads usage out of one answer. `feed()` every chunk, then `usage()` once."""

    __slots__ = ("model", "_sse", "_decode", "_tail", "_copy", "_size", "_usage", "_broken",
                 "_streamed", "_events", "_final")

    def __init__(self, model: str, content_type: str, content_encoding: str, status: int):
        self.model = model
        self._sse = content_type.startswith("text/event-stream")
        self._decode: Callable[[bytes], bytes] | None = None
        self._broken = status != 200
        encoding = content_encoding.strip().lower()
        if encoding and encoding != "identity" and not self._broken:
            make = _DECODERS.get(encoding)
            self._decode = make() if make else None
            if self._decode is None:
                log.warning("cannot meter an answer in content-encoding %r", encoding)
                self._broken = True
        self._tail = b""
        self._copy: list[bytes] = []
        self._size = 0
        self._usage: dict[str, Any] = {}
        self._streamed = 0  # SSE bytes seen (decoded)
        self._events = 0
        self._final = False  # message_delta's usage (or a JSON answer's) was read

    @property
    def complete(self) -> bool:
        """The answer's final usage was read (else `usage()` is an estimate)."""
        return self._final

    def feed(self, chunk: bytes) -> None:
        if self._broken:
            return
        try:
            if self._decode is not None:
                chunk = self._decode(chunk)
            if self._sse:
                self._feed_sse(chunk)
            elif self._size + len(chunk) <= MAX_JSON_COPY:
                self._copy.append(chunk)
                self._size += len(chunk)
            else:
                self._broken = True
        except Exception:  # metering must never break the stream it watches
            log.warning("usage metering failed for one answer", exc_info=True)
            self._broken = True

    def _feed_sse(self, chunk: bytes) -> None:
        self._streamed += len(chunk)
        self._events += chunk.count(b"data:")
        data = self._tail + chunk if self._tail else chunk
        if b"\r" in data:  # CRLF line ends; a CR at the end waits in the tail for its LF
            data = data.replace(b"\r\n", b"\n")
        end = data.rfind(b"\n\n")
        if end < 0:
            self._tail = data if len(data) <= MAX_SSE_TAIL else b""
            return
        complete, self._tail = data[:end], data[end + 2 :]
        if b'"usage"' not in complete:
            return
        for event in complete.split(b"\n\n"):
            if b'"usage"' in event:
                for line in event.split(b"\n"):
                    if line.startswith(b"data:"):
                        self._event(json.loads(line[5:]))

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.model = message.get("model") or self.model
            self._merge(message.get("usage"))
        elif kind == "message_delta":
            self._merge(event.get("usage"))
            self._final = self._final or isinstance(event.get("usage"), dict)

    def _merge(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self._usage.update({k: v for k, v in usage.items() if v is not None})

    def usage(self) -> dict[str, float]:
        """This answer's usage: the four token counts, `requests` (1), `cost_usd`, and
        `web_search_requests` and `estimated_requests` (1: a cut stream) when not zero."""
        if self._copy and not self._broken:
            try:
                body = json.loads(b"".join(self._copy))
                if isinstance(body, dict):
                    self.model = body.get("model") or self.model
                    self._merge(body.get("usage"))
                    self._final = isinstance(body.get("usage"), dict)
            except ValueError:
                log.warning("could not read usage from a JSON answer")
        usage = self._usage
        if self._sse and not self._final and not self._broken and self._streamed:
            streamed = max(self._streamed - EVENT_ENVELOPE * self._events, 0)
            guess = -(-streamed // OUTPUT_BYTES_PER_TOKEN)
            usage = {**usage, "output_tokens": max(int(usage.get("output_tokens") or 0), guess)}
        result: dict[str, float] = {k: int(usage.get(k) or 0) for k in TOKEN_KEYS}
        result["requests"] = 1
        result["cost_usd"] = cost_usd(self.model, usage) if usage else 0.0
        searches = server_tool_requests(usage).get("web_search_requests", 0)
        if searches:
            result["web_search_requests"] = searches
        if usage is not self._usage:
            result["estimated_requests"] = 1
        return result
