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

from ml_agent.lines import LineSplitter

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
    because modal's stream iterators block. Lines come without their newline, each cut at
    `ml_agent.lines.MAX_LINE_BYTES` (the sandbox's output is untrusted): modal's own line
    splitting, which has no cap, is turned off (`_raw_chunks`).
    """
    lines: queue.Queue[tuple[str, str | None]] = queue.Queue()

    def pump(name: str) -> None:
        splitter = LineSplitter()
        try:
            for chunk in _raw_chunks(getattr(sandbox, name)):
                for line in splitter.feed(chunk.encode()):
                    lines.put((name, line.decode("utf-8", "replace")))
            for line in splitter.flush():
                lines.put((name, line.decode("utf-8", "replace")))
        except Exception as exc:  # noqa: BLE001 - reported to the consumer below
            lines.put((name, f"[ml-agent: reading {name} failed: {exc}]"))
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


def _raw_chunks(stream: Any) -> Any:
    """A sandbox stream's text as it arrives, not split into lines by modal.

    modal makes sandbox streams with `by_line=True` and then joins chunks until a newline
    comes, however long that takes (io_streams.py `_StreamReaderThroughServer._line_buffer`;
    V2: `_TextStreamReaderThroughCommandRouter._line_buffer`): its `_by_line` is turned off
    before the first read, so that our splitter (which caps a line) sees the chunks. When a
    modal release no longer has it, modal's lines come through, still cut by ours.
    """
    from modal._utils.async_utils import synchronizer

    impl = getattr(synchronizer._translate_in(stream), "_impl", None)
    if impl is not None and isinstance(getattr(impl, "_by_line", None), bool):
        impl._by_line = False
    return stream
