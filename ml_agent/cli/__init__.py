"""The `ml-agent` command: a Typer app assembled lazily, so start-up stays fast."""

from __future__ import annotations

import os
import sys

from ml_agent.errors import MlAgentError


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point. User errors print without a traceback and exit 1."""
    args = sys.argv[1:] if argv is None else argv
    try:
        from ml_agent.cli.app import build_app

        app = build_app()
        result = app(args=args, prog_name="ml-agent", standalone_mode=False)
        return int(result or 0)
    except MlAgentError as exc:
        if os.environ.get("ML_AGENT_DEBUG"):
            raise
        from ml_agent.cli.output import print_error

        print_error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except SystemExit as exc:  # typer.Exit / click's exit with a code
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except Exception as exc:
        import click

        if isinstance(exc, click.exceptions.Abort):
            return 130
        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Exit):
            return exc.exit_code
        raise
