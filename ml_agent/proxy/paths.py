"""Which request paths the proxy forwards: an allow-list, matched on a strictly checked path."""

from __future__ import annotations

from collections.abc import Iterable

#: (method, path) pairs the Claude CLI needs; everything else is refused.
DEFAULT_ALLOWED = (
    ("POST", "/v1/messages"),
    ("POST", "/v1/messages/count_tokens"),
    ("GET", "/v1/models"),
)


class PathRefused(Exception):
    """The path is malformed (403) or not on the allow-list (404)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_allowed(entries: Iterable[str | tuple[str, str]]) -> frozenset[tuple[str, str]]:
    """Accepts ("POST", "/v1/messages") pairs or "POST /v1/messages" strings."""
    allowed = set()
    for entry in entries:
        method, path = entry.split(None, 1) if isinstance(entry, str) else entry
        allowed.add((method.upper(), "/" + path.strip().strip("/")))
    return frozenset(allowed)


def check(
    method: str, raw_path: bytes, prefix: str, allowed: frozenset[tuple[str, str]]
) -> str:
    """Return the API path (prefix removed) for an allowed request, else raise PathRefused.

    `raw_path` is the path exactly as sent (still percent-encoded). Anything that a server
    could read as a different path is refused rather than normalised: `..` or `.`
    segments, empty segments, percent-encoding (no API path needs it, and `%2F`/`%2e`
    are how traversal hides), backslashes and control characters. A trailing slash is
    tolerated. The prefix is where the proxy is mounted (e.g. `/anthropic`).
    """
    try:
        path = raw_path.decode("ascii")
    except UnicodeDecodeError:
        raise PathRefused(403, "path must be ASCII") from None
    if "%" in path or "\\" in path or any(ord(c) < 0x21 or ord(c) == 0x7F for c in path):
        raise PathRefused(403, "encoded or unusual characters are not allowed in the path")
    if prefix:
        if path != prefix and not path.startswith(prefix + "/"):
            raise PathRefused(404, "not found")
        path = path[len(prefix) :]
    segments = path.rstrip("/").split("/")[1:] if path not in ("", "/") else []
    if any(s in ("", ".", "..") for s in segments):
        raise PathRefused(403, "path segments '', '.' and '..' are not allowed")
    api_path = "/" + "/".join(segments)
    if (method, api_path) not in allowed:
        if any(p == api_path for _, p in allowed):
            raise PathRefused(405, f"method {method} is not allowed on {api_path}")
        raise PathRefused(404, f"{method} {api_path} is not forwarded by this proxy")
    return api_path
