"""`ml-agent results`: runs side by side from the registry and the files each run wrote."""

from __future__ import annotations

import csv
import io
import json
import os

import pytest

from ml_agent.cli import main
from tests.cli.runfolders import make_run

A, B, C = "20261126-0315-aaaaaa", "20261126-0316-bbbbbb", "20261126-0317-cccccc"


def results_json(capsys, *args: str) -> list[dict]:
    assert main(["results", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_rows_carry_cost_duration_and_the_metrics_each_run_wrote(home, capsys):
    make_run(home, A, cost=0.25, agent_cost=0.3, result={"turns": 7, "cost_usd": 0.25},
             evals={"metrics": {"accuracy": 0.91, "f1": 0.88, "note": "text", "ok": True},
                    "test": {"loss": 0.4, "nested": {"x": 1}}})
    [row] = results_json(capsys, A)
    assert row["run"] == A and row["status"] == "succeeded" and row["duration_s"] == 600
    assert (row["cost_usd"], row["agent_cost_usd"]) == (0.25, 0.3)
    # flat numeric keys only, prefixed by the file stem; no bool, no string, no nesting
    assert row["metrics"] == {"metrics.accuracy": 0.91, "metrics.f1": 0.88, "test.loss": 0.4,
                              "turns": 7}
    assert main(["results", A]) == 0
    out = capsys.readouterr().out
    assert "metrics.accuracy" in out and "0.91" in out and "$0.25" in out and "10m" in out


def test_the_proxys_cost_in_result_json_wins_over_the_registry(home, capsys):
    make_run(home, A, cost=None, result={"cost_usd": 1.5, "agent_cost_usd": 0.1})
    [row] = results_json(capsys, A)
    assert (row["cost_usd"], row["agent_cost_usd"]) == (1.5, 0.1)


@pytest.mark.parametrize("flags", [["--sort", "-metrics.accuracy"],
                                   ["--sort", "metrics.accuracy", "--desc"]])
def test_sort_descending_puts_runs_without_the_metric_last(home, capsys, flags):
    make_run(home, A, evals={"metrics": {"accuracy": 0.5}})
    make_run(home, B, evals={"metrics": {"accuracy": 0.9}})
    make_run(home, C, evals={})
    rows = results_json(capsys, *flags)
    assert [r["run"] for r in rows] == [B, A, C]
    rows = results_json(capsys, "--sort", "metrics.accuracy")
    assert [r["run"] for r in rows] == [A, B, C]


def test_an_unknown_sort_column_is_a_usage_error_naming_the_columns(home, capsys):
    make_run(home, A, evals={"metrics": {"accuracy": 0.5}})
    assert main(["results", "--sort", "acuracy"]) == 2
    err = capsys.readouterr().err
    assert "acuracy" in err and "metrics.accuracy" in err


def test_one_table_per_sweep_and_sweep_ids_select_their_runs(home, capsys):
    make_run(home, A, sweep="sw-20261126-0315-111111", evals={"m": {"acc": 1}})
    make_run(home, B, sweep="sw-20261126-0315-111111", evals={"m": {"acc": 2}})
    make_run(home, C, sweep="sw-20261126-0316-222222")
    assert main(["results"]) == 0
    out = capsys.readouterr().out
    assert "sweep sw-20261126-0315-111111 (2 runs)" in out
    assert "sweep sw-20261126-0316-222222 (1 runs)" in out
    rows = results_json(capsys, "sw-20261126-0315")
    assert sorted(r["run"] for r in rows) == [A, B]
    assert {r["sweep"] for r in rows} == {"sw-20261126-0315-111111"}


def test_csv_has_one_header_a_sweep_column_and_neutralised_formula_names(home, capsys):
    make_run(home, A, sweep="sw-20261126-0315-111111", evals={"=cmd": {"x": 1}})
    make_run(home, B, evals={"m": {"acc": 0.5}})
    assert main(["results", "--csv"]) == 0
    table = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    header, *rows = table
    assert header[:6] == ["sweep", "run", "status", "duration_s", "cost_usd", "agent_cost_usd"]
    assert "'=cmd.x" in header and "m.acc" in header
    assert len(rows) == 2 and {r[0] for r in rows} == {"sw-20261126-0315-111111", ""}


def test_agent_planted_files_are_skipped_with_a_note_never_followed_or_blocking(
    home, capsys, tmp_path
):
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"stolen": 1}))
    folder = make_run(home, A, evals={"ok": {"acc": 0.7}})
    (folder / "eval" / "link.json").symlink_to(secret)
    os.mkfifo(folder / "eval" / "fifo.json")
    (folder / "eval" / "big.json").write_bytes(b"{" + b" " * (2 << 20) + b"}")
    (folder / "eval" / "list.json").write_text("[1, 2]")
    os.symlink(secret, folder / "result.json")
    [row] = results_json(capsys, A)
    assert row["metrics"] == {"ok.acc": 0.7}
    notes = " ".join(row["notes"])
    assert "big.json" in notes and "list.json" in notes and "result.json" in notes


def test_markup_and_control_characters_in_metric_names_are_shown_inert(home, capsys):
    make_run(home, A, evals={"m": {"[bold red]x\x1b[2J": 1.0}})
    assert main(["results", A]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "bold red" in out


def test_a_run_whose_volume_is_gone_still_has_its_row_and_says_so(home, capsys):
    import shutil

    folder = make_run(home, A, cost=0.2)
    shutil.rmtree(folder.parent.parent)
    [row] = results_json(capsys, A)
    assert row["cost_usd"] == 0.2 and "gone" in row["notes"][0]


def test_run_prefixes_resolve_and_an_unknown_run_is_one_clear_error(home, capsys):
    make_run(home, A)
    [row] = results_json(capsys, "20261126-0315")
    assert row["run"] == A
    assert main(["results", "20991231"]) == 1
    err = capsys.readouterr().err
    assert "no " in err and "run '20991231'" in err and "ml-agent ps" in err
