"""A sandbox's stdio as the Modal backend uses it: numbered stdin writes, merged output.

modal numbers each drain of a stdin writer (V1: `index` from 1, modal/io_streams.py
`_StreamWriterThroughServer`; V2: a byte `offset` from 0,
`_StreamWriterThroughCommandRouterBuffer`) and Modal drops a write whose number it has
seen. So a run keeps one writer, and a later process carries on the numbering
(`stdin_position`/`set_stdin_position`, the two places that touch modal's private state).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import modal

#: Bytes per stdin drain: modal refuses more than 2 MiB in a writer's buffer (io_streams.py
#: MAX_BUFFER_SIZE; V2: TASK_COMMAND_ROUTER_MAX_BUFFER_SIZE).
STDIN_CHUNK = 1 << 20
#: `follow=False` readers stop when a live sandbox has printed nothing for this long.
IDLE_S = 1.0


def write_stdin(sandbox: modal.Sandbox, text: str) -> None:
    """All of `text` to the sandbox's stdin, in drains modal accepts (any length)."""
    data = text.encode()
    for start in range(0, len(data), STDIN_CHUNK):
        sandbox.stdin.write(data[start : start + STDIN_CHUNK])
        sandbox.stdin.drain()


def _writer(sandbox: modal.Sandbox) -> Any:
    """modal's writer behind `sandbox.stdin`: V1 numbers drains (`_index`), V2 counts bytes
    (`_offset`) (modal/io_streams.py `_StreamWriterThroughServer`,
    `_StreamWriterThroughCommandRouterBuffer`)."""
    from modal._utils.async_utils import synchronizer

    return getattr(synchronizer._translate_in(sandbox.stdin), "_impl", None)


def stdin_position(sandbox: modal.Sandbox) -> dict[str, int]:
    writer = _writer(sandbox)
    return {k: v for k in ("_index", "_offset") if isinstance(v := getattr(writer, k, None), int)}


def set_stdin_position(sandbox: modal.Sandbox, position: dict[str, int] | None) -> None:
    """Continue a run's stdin numbering where the last writer (another process) stopped."""
    writer = _writer(sandbox)
    for name, value in (position or {}).items():
        if isinstance(getattr(writer, name, None), int):
            setattr(writer, name, value)


def read_lines(
    sandbox: modal.Sandbox, streams: tuple[str, ...], *, follow: bool, idle_s: float = IDLE_S
) -> Iterator[tuple[str, str]]:
    """(stream, line) from the sandbox's output from its start, stdout/stderr interleaved.

    `follow` reads until the sandbox ends; otherwise until it has been quiet for `idle_s`
    (Modal streams a live sandbox's output without an end). Readers are daemon threads
    because modal's stream iterators block.
    """
    lines: queue.Queue[tuple[str, str | None]] = queue.Queue()

    def pump(name: str) -> None:
        try:
            for line in getattr(sandbox, name):
                lines.put((name, line))
        except Exception as exc:  # noqa: BLE001 - reported to the consumer below
            lines.put((name, f"[ml-agent: reading {name} failed: {exc}]\n"))
        finally:
            lines.put((name, None))

    for name in streams:
        threading.Thread(target=pump, args=(name,), name=f"modal-{name}", daemon=True).start()
    open_streams = len(streams)
    while open_streams:
        try:
            name, line = lines.get(timeout=None if follow else idle_s)
        except queue.Empty:
            return
        if line is None:
            open_streams -= 1
        else:
            yield name, line
