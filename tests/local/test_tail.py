"""Following a run's log holds a bounded part of it in memory, not the whole unread log
(100 runs followed by one launcher: bench/launcher_memory.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc

from ml_agent.backends.local import LocalBackend, registry
from ml_agent.lines import MAX_LINE_BYTES, was_cut
from tests.cli.runfolders import make_run


def test_a_long_log_is_read_in_bounded_chunks_and_every_event_comes_out(tmp_path):
    home = tmp_path / "home"
    run_id = "20261204-1200-abcdef"
    make_run(home, run_id)
    events = registry.RunPaths.of(run_id, home).events
    n = 40_000  # ~8 MB
    events.write_bytes(b"".join(
        (json.dumps({"type": "assistant_text", "seq": s, "ts": 1.0, "text": "x" * 150})
         + "\n").encode() for s in range(1, n + 1)))
    assert events.stat().st_size > 7_000_000

    tracemalloc.start()
    try:
        seqs = [event["seq"] for event in LocalBackend(home).events(run_id, follow=True)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seqs == list(range(1, n + 1))
    # The list of 40,000 seqs is ~1.3 MB of it; the whole log would be 8 MB, twice (bytes
    # and its lines).
    assert peak < 3_000_000, peak


#: Prints 40 MB with no newline, in 1 MB writes, then an event: an agent's output is
#: untrusted, and a line that never ends must not grow the reader's memory.
HUGE_LINE = """
import json, sys
out = sys.stdout.buffer
for _ in range(40):
    out.write(b"x" * (1 << 20))
    out.flush()
out.write(b"\\n" + json.dumps({"type": "turn_end", "seq": 1, "ts": 1.0}).encode() + b"\\n")
"""


def test_a_huge_line_in_the_log_is_cut_and_memory_stays_bounded(tmp_path):
    home = tmp_path / "home"
    run_id = "20261204-1200-abcdef"
    make_run(home, run_id)
    output = registry.RunPaths.of(run_id, home).output
    with open(output, "wb") as fh:
        subprocess.run([sys.executable, "-c", HUGE_LINE], stdout=fh, check=True)
    assert output.stat().st_size > 40 << 20

    tracemalloc.start()
    try:
        sizes, cut = [], ""
        for line in LocalBackend(home).logs(run_id, follow=True):
            sizes.append(len(line))
            cut = line[-120:] if was_cut(line) else cut
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(sizes) == 2 and sizes[0] <= MAX_LINE_BYTES + 100
    assert cut.endswith(f"line cut at {MAX_LINE_BYTES} bytes; {(40 << 20) - MAX_LINE_BYTES} "
                        "more bytes not shown]")
    assert peak < 3 * MAX_LINE_BYTES, peak  # before: the whole 40 MB line, and more
