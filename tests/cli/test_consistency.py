"""One CLI: usage errors in one form, help that shows what to type, the same defaults and
the same set-up advice everywhere, and what `proxy` refuses before it acts."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ml_agent.cli import main
from ml_agent.cli.app import build_app
from ml_agent.contracts import CONFIGS_DIR
from tests.cli.test_help import COMMANDS


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["up", "--bogus"], "ml-agent up"),
        (["up", "--detach=3"], "ml-agent up"),
        (["up", "x.yaml", "--backend", "k8s"], "ml-agent up"),
        (["plan", "--backend", "k8s"], "ml-agent plan"),
        (["attach"], "ml-agent attach"),
        (["stop"], "ml-agent stop"),
        (["ps", "--backend"], "ml-agent ps"),
        (["validate"], "ml-agent validate"),
        (["validate", "--bogus", "configs"], "ml-agent validate"),
        (["proxy", "token", "--budget", "-1"], "ml-agent proxy token"),
        (["proxy", "serve", "--budget", "0"], "ml-agent proxy serve"),
        (["nosuch"], "ml-agent"),
    ],
    ids=" ".join,
)
def test_every_usage_error_is_one_line_with_the_way_out_and_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], command: str
) -> None:
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""  # e.g. no token minted
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert err.endswith(f"; see `{command} --help`\n"), err


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_shows_what_to_type_not_python_types(command: list[str]) -> None:
    result = CliRunner().invoke(build_app(), [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert not re.search(r"<(bool|str|int|float|path|list\[[a-z]+\])>", result.output), (
        result.output
    )


def test_plan_defaults_to_the_config_up_defaults_to(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--json"]) == 0
    default = json.loads(capsys.readouterr().out)
    assert main(["plan", str(CONFIGS_DIR / "local.yaml"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == default


def test_doctor_and_up_give_the_same_modal_set_up_command(tmp_path: Path) -> None:
    from modal import exception as mx

    from ml_agent.backends.local.doctor import modal_checks
    from ml_agent.backends.modal.backend import modal_errors
    from ml_agent.errors import BackendError

    env = {"MODAL_CONFIG_PATH": str(tmp_path / "missing.toml")}
    token = next(c for c in modal_checks(env) if c.what == "Modal token")
    with pytest.raises(BackendError) as raised, modal_errors("launching"):
        raise mx.AuthError("token missing")
    commands = {m for text in (token.detail, str(raised.value))
                for m in re.findall(r"`(modal [a-z ]+)`", text)}
    assert commands == {"modal setup"}


def test_proxy_serve_on_a_busy_port_says_so_before_minting_a_token(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "ANTHROPIC_API_KEY": "sk-ant-test", "ML_AGENT_HOME": str(tmp_path)}
        proc = subprocess.run(
            [sys.executable, "-m", "ml_agent", "proxy", "serve", "--port", str(port)],
            env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )
    assert proc.returncode == 1
    assert proc.stdout == ""  # no token was minted (and none printed)
    assert proc.stderr == (
        f"error: port {port} on 127.0.0.1 is busy (another proxy?): stop it, or choose "
        "another with --port\n"
    )
