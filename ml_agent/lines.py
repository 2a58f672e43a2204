"""Lines of sandbox output, each capped: a line that never ends cannot grow a reader's memory.

Sandbox output is untrusted: an agent can print gigabytes without a newline. Every host-side
reader that splits it into lines (the local supervisor, `attach`/`logs` on both backends)
does it with `LineSplitter`, which keeps at most `cap` bytes of a line (by default
`protocol.MAX_EVENT_BYTES`, more than any real event) and counts the rest: the line comes out
as its first `cap` bytes followed by a marker saying how much was cut. A cut event is no
longer JSON, so event readers skip it (`was_cut` tells them to say so).
"""

from __future__ import annotations

import os
from pathlib import Path

from ml_agent.contracts import protocol

MAX_LINE_BYTES = protocol.MAX_EVENT_BYTES
_MARK = b" [ml-agent: line cut at "


def marker(cap: int, dropped: int) -> bytes:
    return _MARK + f"{cap} bytes; {dropped} more bytes not shown]".encode()


def was_cut(line: bytes | str) -> bool:
    """The line was cut by a LineSplitter (or prints the same marker)."""
    tail = line[-120:]
    return (_MARK in tail) if isinstance(tail, bytes) else (_MARK.decode() in tail)


class LineSplitter:
    """Bytes in, complete lines out (without their newline), each at most `cap` bytes plus
    the cut marker. Memory: at most `cap` bytes plus the chunk being fed."""

    def __init__(self, cap: int = MAX_LINE_BYTES) -> None:
        self.cap = cap
        self._buf = b""
        self._dropped = 0  # bytes of the current line beyond the cap

    def feed(self, data: bytes) -> list[bytes]:
        *complete, rest = data.split(b"\n")  # a chunk is bounded: so are its parts
        lines = []
        for part in complete:
            self._keep(part)
            lines.append(self._take())
        self._keep(rest)
        return lines

    def _keep(self, part: bytes) -> None:
        """Add `part` to the current line, up to the cap; count the rest."""
        room = max(self.cap - len(self._buf), 0)
        if len(part) > room:
            self._dropped += len(part) - room
            part = part[:room]
        self._buf += part

    def flush(self) -> list[bytes]:
        """The last line, when the output ended without a newline."""
        return [self._take()] if self._buf or self._dropped else []

    def _take(self) -> bytes:
        line = self._buf + (marker(self.cap, self._dropped) if self._dropped else b"")
        self._buf, self._dropped = b"", 0
        return line


def last_lines(path: Path, n: int, *, max_bytes: int = 64 * 1024) -> list[str]:
    """The last `n` non-blank lines of a log, from its last `max_bytes` bytes only (a run's
    output.log holds every leg's output: it can be any size). [] when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - max_bytes))
            text = fh.read(max_bytes).decode("utf-8", "replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-n:]
