"""`ml-agent sweep FILE --dry-run`: every run of the cross product and the worst case;
sweep files validated like configs, with file:line:col errors."""

from __future__ import annotations

import json

import pytest

from ml_agent.cli import main
from ml_agent.contracts import CONFIGS_DIR

LOCAL = CONFIGS_DIR / "local.yaml"  # proxy.budget_usd: 5, local: no compute cost


def write(tmp_path, text: str):
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def test_dry_run_lists_the_cross_product_and_the_worst_case(home, tmp_path, capsys):
    path = write(tmp_path, f"""\
base: {LOCAL}
tasks: [train a, train b]
axes:
  agent.model: [claude-sonnet-4-5, claude-haiku-4-5]
  proxy.budget_usd: [1, 2.5]
max_parallel: 1
""")
    assert main(["sweep", str(path), "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert len(plan["runs"]) == 8 and plan["worst_case_usd"] == 14.0
    assert plan["api_budget_usd"] == 14.0 and plan["max_parallel"] == 1
    first = plan["runs"][0]
    assert first["task"] == "train a" and first["label"] == "r00-claude-sonnet-4-5-1"
    assert first["overrides"] == ['agent.model="claude-sonnet-4-5"', "proxy.budget_usd=1"]
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "8 run(s)" in out and "worst case of the whole sweep: $14.00" in out
    assert not (home / "sweeps").exists()  # nothing recorded, nothing launched


def test_a_sweep_over_its_budget_is_refused_and_says_how_to_fix_it(home, tmp_path, capsys):
    path = write(tmp_path, f"base: {LOCAL}\ntasks: [a, b, c]\nbudget_usd: 12\n")
    assert main(["sweep", str(path)]) == 1
    err = capsys.readouterr().err
    assert "add up to $15.00, over the sweep's budget_usd ($12.00)" in err
    assert not (home / "sweeps").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"base: {LOCAL}\ntasks: [a]\nmax_paralel: 2\n",
         ["sweep.yaml:3:1: max_paralel: unknown key 'max_paralel'; did you mean 'max_parallel'?"]),
        (f"base: {LOCAL}\ntasks: []\n", ["sweep.yaml:2:8: tasks:"]),
        (f"base: {LOCAL}\ntasks: [a]\naxes:\n  sandbox.gpu: [null, A11]\n"
         "  agent.max_turns: [5, -1]\n",
         ["sweep.yaml:4:23: axes.sandbox.gpu[1]: sandbox.gpu: unknown GPU 'A11'",
          "sweep.yaml:5:24: axes.agent.max_turns[1]: agent.max_turns:"]),
        ("base: nowhere.yaml\ntasks: [a]\n",
         ["sweep.yaml:1:7: base: no config file 'nowhere.yaml' next to the sweep file"]),
        ("- just a list\n", ["sweep.yaml:1:1: a sweep file is a mapping"]),
        ("base: /etc/ml-agent.yaml\ntasks: [a]\n",
         ["sweep.yaml:1:7: base: base '/etc/ml-agent.yaml' is outside the project tree"]),
    ],
)
def test_sweep_file_errors_point_at_the_line(home, tmp_path, capsys, monkeypatch, text, expected):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, text)
    assert main(["sweep", "sweep.yaml", "--dry-run"]) == 1
    err = capsys.readouterr().err
    for line in expected:
        assert line in err, err
    assert "Traceback" not in err


def test_resume_of_an_unknown_sweep_and_usage_errors(home, capsys):
    assert main(["sweep", "--resume", "sw-2099"]) == 1
    assert "no sweep 'sw-2099'" in capsys.readouterr().err
    assert main(["sweep"]) == 2
    assert "give a sweep FILE or --resume ID" in capsys.readouterr().err
