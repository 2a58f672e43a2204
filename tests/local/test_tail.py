"""Following a run's log holds a bounded part of it in memory, not the whole unread log
(100 runs followed by one launcher: bench/launcher_memory.py)."""

from __future__ import annotations

import json
import tracemalloc

from ml_agent.backends.local import LocalBackend, registry
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
