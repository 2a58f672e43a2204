"""merge_proxy_usage: the proxy's usage into the agent's result.json, never through a link."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ml_agent.backends.modal.results import merge_proxy_usage

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
                      "ended_at": "2026-11-26T03:20:00Z", "turns": 3}
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
    with pytest.raises(OSError):
        merge_proxy_usage(data, RUN, USAGE)
    (data / "runs" / RUN).unlink()
    folder = run_folder(data)
    (folder / "result.json").symlink_to(outside / "result.json")
    with pytest.raises(OSError):
        merge_proxy_usage(data, RUN, USAGE)
    assert json.loads((outside / "result.json").read_text()) == {"status": "running"}


def test_a_planted_temp_link_is_replaced_not_followed(tmp_path):
    target = tmp_path / "target"
    target.write_text("untouched")
    folder = run_folder(tmp_path / "data", {"status": "succeeded"})
    (folder / f".result.json.{os.getpid()}.tmp").symlink_to(target)
    merge_proxy_usage(tmp_path / "data", RUN, USAGE)
    assert target.read_text() == "untouched"
    assert json.loads((folder / "result.json").read_text())["proxy_usage"] == USAGE


@pytest.mark.parametrize(
    ("run_id", "content", "match"),
    [
        ("../../etc", {"status": "running"}, "not a run id"),
        (RUN, ["not", "an", "object"], "not a JSON object"),
        (RUN, "x" * (5 * 1024 * 1024), "larger than"),
    ],
)
def test_bad_input_is_refused(tmp_path, run_id, content, match):
    run_folder(tmp_path, content)
    with pytest.raises(ValueError, match=match):
        merge_proxy_usage(tmp_path, run_id, USAGE)


def test_the_event_log_replays_events_before_a_seq_and_skips_the_rest(tmp_path):
    from ml_agent.backends.modal.results import read_run_events

    folder = run_folder(tmp_path)
    events = [{"type": "assistant_text", "seq": i, "ts": 1.0, "text": str(i)} for i in (1, 2, 3)]
    lines = [json.dumps({"type": "input", "input": {"type": "user", "text": "x"}}),
             *map(json.dumps, events), "not json", '{"type": "result"}']
    (folder / "transcript.jsonl").write_text("\n".join(lines) + "\n")
    assert read_run_events(tmp_path, RUN, before=3) == events[:2]
    assert read_run_events(tmp_path, "20261126-0315-ffffff", before=3) == []  # no folder


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_the_event_log_is_read_only_from_a_regular_file(tmp_path, kind):
    from ml_agent.backends.modal.results import read_run_events

    folder = run_folder(tmp_path)
    secret = tmp_path / "elsewhere.jsonl"
    secret.write_text(json.dumps({"type": "assistant_text", "seq": 1, "ts": 1.0}) + "\n")
    if kind == "symlink":
        (folder / "transcript.jsonl").symlink_to(secret)
        with pytest.raises(OSError):
            read_run_events(tmp_path, RUN, before=9)
    else:
        os.mkfifo(folder / "transcript.jsonl")
        with pytest.raises(ValueError, match="not a regular file"):
            read_run_events(tmp_path, RUN, before=9)
