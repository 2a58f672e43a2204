"""Usage metering: tokens and cost read from answers as they stream past, without buffering.

SSE answers: only the events that carry `"usage"` (message_start, message_delta) are parsed;
every other chunk costs one substring search. `message_delta.usage` is cumulative, so its
fields replace message_start's. JSON answers: a copy of the body (capped) is parsed at the
end. Compressed answers are metered through an incremental decompressor of the copy; the
proxy only offers the upstream encodings `decoders()` can read.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Callable
from typing import Any

from ml_agent.proxy.pricing import cost_usd

log = logging.getLogger(__name__)

TOKEN_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)
MAX_JSON_COPY = 16 * 1024 * 1024
MAX_SSE_TAIL = 4 * 1024 * 1024  # a partial event longer than this is not a usage event


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

    __slots__ = ("model", "_sse", "_decode", "_tail", "_copy", "_size", "_usage", "_broken")

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

    def _merge(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self._usage.update({k: v for k, v in usage.items() if v is not None})

    def usage(self) -> dict[str, float]:
        """This answer's usage: the four token counts, `requests` (1) and `cost_usd`."""
        if self._copy and not self._broken:
            try:
                body = json.loads(b"".join(self._copy))
                if isinstance(body, dict):
                    self.model = body.get("model") or self.model
                    self._merge(body.get("usage"))
            except ValueError:
                log.warning("could not read usage from a JSON answer")
        result: dict[str, float] = {k: int(self._usage.get(k) or 0) for k in TOKEN_KEYS}
        result["requests"] = 1
        result["cost_usd"] = cost_usd(self.model, self._usage) if self._usage else 0.0
        return result
