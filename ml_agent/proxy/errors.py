"""Anthropic-shaped error answers: every refusal of the proxy looks like one of the API's.

`{"type": "error", "error": {"type": ..., "message": ...}}` with the status Anthropic uses
for that type, so the Claude CLI and the SDKs show the message and decide on retries as they
would for the real API (they retry 408/409/429/5xx, not 401/402/403/404/413).
"""

from __future__ import annotations

import json
from typing import Any

# error type -> HTTP status, as in Anthropic's API.
STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "bad_gateway": 502,  # not Anthropic's; the upstream could not be reached
    "timeout_error": 504,
}


def error_body(type: str, message: str) -> bytes:
    return json.dumps({"type": "error", "error": {"type": type, "message": message}}).encode()


async def send_error(
    send: Any,
    type: str,
    message: str,
    *,
    status: int | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """Send a complete JSON error response on a raw ASGI `send`."""
    body = error_body(type, message)
    headers = dict(headers or {})
    retry = headers.pop("x-should-retry", "false" if (status or STATUS[type]) < 500 else "true")
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-should-retry", retry.encode()),
    ]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status or STATUS[type], "headers": raw})
    await send({"type": "http.response.body", "body": body})


def sse_error_event(type: str, message: str) -> bytes:
    """A mid-stream `event: error`, as Anthropic sends when a stream fails after it began."""
    data = json.dumps({"type": "error", "error": {"type": type, "message": message}})
    return f"event: error\ndata: {data}\n\n".encode()
