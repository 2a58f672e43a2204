"""The `ml-agent` command: a Typer app assembled lazily, so start-up stays fast."""

from __future__ import annotations

import os
import sys

from ml_agent.errors import MlAgentError


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point. User errors print without a traceback and exit 1."""
    args = sys.argv[1:] if argv is None else argv
    try:
        if args[:1] == ["validate"] and not {"-h", "--help"} & set(args[1:]):
            # CI and pre-commit run this on every change: skip building the Typer app
            from ml_agent.cli.validate import fast_main

            return fast_main(args[1:])
        from ml_agent.cli.app import build_app

        app = build_app()
        # standalone: Typer (which vendors click) handles usage errors (exit 2) and Ctrl-C
        # itself; our MlAgentError passes through it and is caught below.
        app(args=args, prog_name="ml-agent", standalone_mode=True)
        return 0
    except MlAgentError as exc:
        if os.environ.get("ML_AGENT_DEBUG"):
            raise
        from ml_agent.cli.output import print_error

        print_error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except SystemExit as exc:  # Typer's exit, with the command's code
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
