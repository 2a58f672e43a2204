"""The real `ml-agent` CLI in-process, for the Modal backend's tests (the fake control plane
is set up by conftest.py's fixtures)."""

from __future__ import annotations

from typer.testing import CliRunner, Result

from ml_agent.cli.app import build_app


def ml_agent(*args: str) -> Result:
    """Run `ml-agent ARGS`; a crash (anything but the CLI's own exit) fails the test."""
    result = CliRunner().invoke(build_app(), list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result
