"""LineSplitter: lines of untrusted output, each cut at a cap (ml_agent/lines.py)."""

from __future__ import annotations

from ml_agent.contracts import protocol
from ml_agent.lines import MAX_LINE_BYTES, LineSplitter, marker, was_cut


def test_lines_come_out_whole_across_chunks():
    splitter = LineSplitter(cap=16)
    assert splitter.feed(b"one\ntw") == [b"one"]
    assert splitter.feed(b"o\n\nthree") == [b"two", b""]
    assert splitter.flush() == [b"three"]
    assert splitter.flush() == []


def test_a_line_over_the_cap_is_cut_with_a_marker_counting_what_was_dropped():
    splitter = LineSplitter(cap=10)
    out = splitter.feed(b"a" * 8)
    out += splitter.feed(b"b" * 100)  # the line goes on and on: nothing is held beyond 10
    out += splitter.feed(b"c\nnext\n")
    assert out == [b"aaaaaaaabb" + marker(10, 99), b"next"]
    assert was_cut(out[0]) and not was_cut(out[1])


def test_a_cut_line_that_never_ends_still_comes_out_at_the_end():
    splitter = LineSplitter(cap=4)
    assert splitter.feed(b"x" * 10) == []
    (last,) = splitter.flush()
    assert last == b"xxxx" + marker(4, 6) and was_cut(last.decode())


def test_the_cap_is_the_protocols_largest_event():
    assert MAX_LINE_BYTES == protocol.MAX_EVENT_BYTES
    # Larger than the largest real event: a 20,000-character tool result, all \u-escaped.
    assert MAX_LINE_BYTES > 20_000 * 6 + 1000


def test_the_last_lines_of_a_huge_log_are_read_from_its_end_only(tmp_path):
    import tracemalloc

    from ml_agent.lines import last_lines

    log = tmp_path / "output.log"
    with open(log, "wb") as fh:
        fh.write(b"x" * (30 << 20))  # a resumed run's earlier legs, one line without end
        fh.write(b"\nbwrap: setting up uid map: Permission denied\n\n")
    tracemalloc.start()
    try:
        tail = last_lines(log, 1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert tail == ["bwrap: setting up uid map: Permission denied"]
    assert peak < 1 << 20, peak
    assert last_lines(tmp_path / "missing.log", 3) == []
