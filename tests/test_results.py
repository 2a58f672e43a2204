"""merge_proxy_usage (both backends): the proxy's usage and cost into the agent's result.json,
never through a link, never blocked by a FIFO, never reading a huge file."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ml_agent.errors import UnsafeFile
from ml_agent.results import merge_proxy_usage

RUN = "20261126-0315-a1b2c3"
USAGE = {"input_tokens": 10.0, "output_tokens": 2.0, "requests": 1.0, "cost_usd": 0.01}


def run_folder(data: Path, result: object | None = None) -> Path:
    folder = data / "runs" / RUN
    folder.mkdir(parents=True)
    if result is not None:
        (folder / "result.json").write_text(json.dumps(result))
    return folder


def test_usage_is_merged_and_a_final_status_is_kept(tmp_path):
    folder = run_folder(tmp_path, {"run_id": RUN, "status": "succeeded", "proxy_usage": None,
                                   "ended_at": "2026-11-26T03:20:00Z", "turns": 3})
    assert merge_proxy_usage(tmp_path, RUN, USAGE, status="stopped",
                             ended_at="2026-11-26T04:00:00Z") == "proxy usage written"
    result = json.loads((folder / "result.json").read_text())
    assert result == {"run_id": RUN, "status": "succeeded", "proxy_usage": USAGE,
                      "ended_at": "2026-11-26T03:20:00Z", "turns": 3, "cost_usd": 0.01,
                      "agent_cost_usd": None}
    assert sorted(os.listdir(folder)) == ["result.json"]  # no temp file left behind


def test_an_unfinished_result_gets_the_launchers_status(tmp_path):
    folder = run_folder(tmp_path, {"status": "running", "ended_at": None, "proxy_usage": None})
    merge_proxy_usage(tmp_path, RUN, USAGE, status="stopped", ended_at="2026-11-26T04:00:00Z")
    result = json.loads((folder / "result.json").read_text())
    assert (result["status"], result["ended_at"]) == ("stopped", "2026-11-26T04:00:00Z")


def test_missing_folder_or_file_is_reported(tmp_path):
    assert merge_proxy_usage(tmp_path, RUN, USAGE) == "no run folder"
    run_folder(tmp_path)
    assert merge_proxy_usage(tmp_path, RUN, USAGE) == "no result.json"


def test_links_planted_by_the_sandbox_are_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "result.json").write_text(json.dumps({"status": "running"}))
    data = tmp_path / "data"
    (data / "runs").mkdir(parents=True)
    (data / "runs" / RUN).symlink_to(outside)
    with pytest.raises(UnsafeFile, match="link"):
        merge_proxy_usage(data, RUN, USAGE)
    (data / "runs" / RUN).unlink()
    folder = run_folder(data)
    (folder / "result.json").symlink_to(outside / "result.json")
    with pytest.raises(UnsafeFile, match="symbolic link"):
        merge_proxy_usage(data, RUN, USAGE)
    assert json.loads((outside / "result.json").read_text()) == {"status": "running"}


def test_the_agents_cost_is_kept_beside_the_proxys_and_a_second_merge_changes_nothing(tmp_path):
    # An agent that says it spent nothing does not make the run cost nothing.
    folder = run_folder(tmp_path, {"status": "succeeded", "cost_usd": None,
                                   "agent_cost_usd": 0.0, "proxy_usage": None})
    merge_proxy_usage(tmp_path, RUN, USAGE)
    merge_proxy_usage(tmp_path, RUN, USAGE)
    result = json.loads((folder / "result.json").read_text())
    assert (result["cost_usd"], result["agent_cost_usd"]) == (0.01, 0.0)
    # result.json from an older agent: its cost_usd was its own figure
    (folder / "result.json").write_text(json.dumps({"status": "succeeded", "cost_usd": 0.5}))
    merge_proxy_usage(tmp_path, RUN, USAGE)
    merge_proxy_usage(tmp_path, RUN, USAGE)
    result = json.loads((folder / "result.json").read_text())
    assert (result["cost_usd"], result["agent_cost_usd"]) == (0.01, 0.5)


def test_a_fifo_planted_as_result_json_does_not_block(tmp_path):
    folder = run_folder(tmp_path)
    os.mkfifo(folder / "result.json")
    outcome: list[BaseException] = []

    def merge() -> None:
        try:
            merge_proxy_usage(tmp_path, RUN, USAGE)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            outcome.append(exc)

    worker = threading.Thread(target=merge, daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():
        os.close(os.open(folder / "result.json", os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("merge_proxy_usage blocked on a FIFO")
    assert len(outcome) == 1 and isinstance(outcome[0], UnsafeFile)
    assert stat.S_ISFIFO(os.lstat(folder / "result.json").st_mode)  # left as it was


#: A 2 GiB sparse result.json: refused; prints how much peak memory grew (KiB).
SPARSE = """
import resource, sys
from pathlib import Path
from ml_agent.errors import UnsafeFile
from ml_agent.results import merge_proxy_usage
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    merge_proxy_usage(Path(sys.argv[1]), sys.argv[2], {"cost_usd": 1.0})
except UnsafeFile as exc:
    print(exc, file=sys.stderr)
else:
    sys.exit("not refused")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_a_sparse_2_gib_result_json_is_refused_without_reading_it(tmp_path):
    folder = run_folder(tmp_path)
    with open(folder / "result.json", "wb") as fh:
        fh.truncate(2 << 30)
    out = subprocess.run([sys.executable, "-c", SPARSE, str(tmp_path), RUN],
                         capture_output=True, text=True, check=True)
    assert "result.json is 2147483648 bytes, over the" in out.stderr
    assert int(out.stdout) < 8 * 1024  # KiB


@pytest.mark.parametrize(
    ("run_id", "content", "match"),
    [
        ("../../etc", {"status": "running"}, "not a run id"),
        (RUN, ["not", "an", "object"], "not a JSON object"),
        (RUN, "x" * (5 * 1024 * 1024), "over the 4194304 byte limit"),
    ],
)
def test_bad_input_is_refused(tmp_path, run_id, content, match):
    run_folder(tmp_path, content)
    with pytest.raises((ValueError, UnsafeFile), match=match):
        merge_proxy_usage(tmp_path, run_id, USAGE)


def test_the_event_log_replays_events_before_a_seq_and_skips_the_rest(tmp_path):
    from ml_agent.results import read_run_events

    folder = run_folder(tmp_path)
    events = [{"type": "assistant_text", "seq": i, "ts": 1.0, "text": str(i)} for i in (1, 2, 3)]
    lines = [json.dumps({"type": "input", "input": {"type": "user", "text": "x"}}),
             *map(json.dumps, events), "not json", '{"type": "result"}']
    (folder / "transcript.jsonl").write_text("\n".join(lines) + "\n")
    assert read_run_events(tmp_path, RUN, before=3) == events[:2]
    assert read_run_events(tmp_path, "20261126-0315-ffffff", before=3) == []  # no folder


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_the_event_log_is_read_only_from_a_regular_file(tmp_path, kind):
    from ml_agent.results import read_run_events

    folder = run_folder(tmp_path)
    secret = tmp_path / "elsewhere.jsonl"
    secret.write_text(json.dumps({"type": "assistant_text", "seq": 1, "ts": 1.0}) + "\n")
    if kind == "symlink":
        (folder / "transcript.jsonl").symlink_to(secret)
    else:
        os.mkfifo(folder / "transcript.jsonl")
    with pytest.raises(UnsafeFile):
        read_run_events(tmp_path, RUN, before=9)


def test_run_records_round_trip_and_planted_ones_are_skipped(tmp_path):
    from ml_agent.results import read_run_records, write_run_record

    run_folder(tmp_path)
    assert write_run_record(tmp_path, RUN, {"run_id": RUN, "status": "succeeded"})
    assert not write_run_record(tmp_path, "20261126-0315-ffffff", {"run_id": "x"})
    other = tmp_path / "runs" / "20261126-0316-a1b2c3"
    other.mkdir()
    os.mkfifo(other / "run.json")  # never blocks the listing
    liar = tmp_path / "runs" / "20261126-0317-a1b2c3"
    liar.mkdir()
    (liar / "run.json").write_text(json.dumps({"run_id": RUN}))  # names another run
    assert read_run_records(tmp_path) == [{"run_id": RUN, "status": "succeeded"}]
