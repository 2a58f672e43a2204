"""Rendering protocol events: untrusted text escaped, the run token redacted, results cut."""

from __future__ import annotations

import io

from rich.console import Console

from ml_agent.cli.chat import Renderer, turn_over

TOKEN = "mla-run-secret-token"


def _render(*events: dict) -> str:
    out = io.StringIO()
    renderer = Renderer(Console(file=out, width=100, color_system=None), [TOKEN])
    for seq, event in enumerate(events, 1):
        renderer.render({"seq": seq, "ts": 0, **event})
    return out.getvalue()


def test_markup_and_control_sequences_from_the_sandbox_are_shown_not_obeyed():
    text = _render({"type": "assistant_text", "text": "[bold red]hi[/] \x1b[2Jthere"})
    assert text == "[bold red]hi[/] [2Jthere\n"


def test_the_run_token_is_redacted_everywhere():
    text = _render(
        {"type": "assistant_text", "text": f"my key is {TOKEN}"},
        {"type": "tool_use", "name": "Bash", "input": {"command": f"echo {TOKEN}"}},
        {"type": "tool_result", "content": f"ANTHROPIC_API_KEY={TOKEN}", "is_error": False},
        {"type": "error", "message": f"bad {TOKEN}", "fatal": True},
    )
    assert TOKEN not in text and text.count("<run token>") == 4


def test_tool_use_is_one_line_and_results_are_truncated():
    text = _render(
        {"type": "tool_use", "name": "Bash", "input": {"command": "ls\n-la /data"}},
        {"type": "tool_result", "content": [{"type": "text", "text": "x\n" * 50}]},
        {"type": "turn_end", "status": "succeeded", "cost_usd": 0.01234, "turns": 2,
         "duration_s": 3.21},
    )
    lines = text.splitlines()
    assert lines[0] == "▸ Bash ls -la /data"
    assert lines[1:9] == ["x"] * 8 and "more characters" in lines[9]
    assert lines[-1] == "── succeeded · agent says $0.01 · 2 turns · 3.2 s"


def _summary(metered: float | None, agent: float | None) -> str:
    out = io.StringIO()
    renderer = Renderer(Console(file=out, width=200, color_system=None), [TOKEN])
    result = {"type": "result", "seq": 9, "ts": 0, "status": "succeeded", "cost_usd": agent,
              "turns": 3, "duration_s": 12.0}
    renderer.summary(result, "20261126-0315-a1b2c3", metered=metered)
    return out.getvalue().rstrip("\n")


def test_the_runs_cost_is_the_proxys_and_the_agents_figure_is_labelled_as_in_ps():
    run = "run 20261126-0315-a1b2c3 succeeded"
    assert _summary(0.42, 0.1) == f"{run} · $0.42 (agent says $0.10) · 3 turns · 12.0 s"
    assert _summary(0.42, 0.4212) == f"{run} · $0.42 · 3 turns · 12.0 s"  # same to the cent
    assert _summary(None, 0.25) == f"{run} · agent says $0.25 · 3 turns · 12.0 s"
    assert _summary(0.003, None) == f"{run} · $0.0030 · 3 turns · 12.0 s"


def test_a_turn_is_over_at_turn_end_result_or_a_fatal_error():
    assert turn_over({"type": "turn_end"}) and turn_over({"type": "result"})
    assert turn_over({"type": "error", "fatal": True})
    assert not turn_over({"type": "error", "fatal": False})
    assert not turn_over({"type": "assistant_text"})
