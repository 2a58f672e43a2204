"""`--help` teaches: every command's help shows at least one runnable example."""

import pytest
from typer.testing import CliRunner

from ml_agent.cli.app import build_app

COMMANDS = [
    ["validate"], ["schema"], ["plan"], ["up"], ["attach"], ["ps"], ["logs"], ["stop"],
    ["doctor"], ["dashboard"], ["proxy", "serve"], ["proxy", "token"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_an_example_in_its_help(command):
    result = CliRunner().invoke(build_app(), [*command, "--help"], terminal_width=120)
    assert result.exit_code == 0, result.output
    prefix = "ml-agent " + " ".join(command)
    examples = [line.strip() for line in result.output.splitlines()
                if line.strip().startswith(prefix)]
    assert examples, result.output
