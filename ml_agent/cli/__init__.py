"""The `ml-agent` command: a Typer app assembled lazily, so start-up stays fast."""

from __future__ import annotations

import os
import sys

from ml_agent.errors import MlAgentError


def app_commands(app: object) -> set[str]:
    """The names of the app's commands and command groups."""
    names = {c.name or c.callback.__name__ for c in app.registered_commands  # type: ignore[attr-defined]
             if c.callback is not None or c.name}
    return names | {g.name for g in app.registered_groups if g.name}  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point. User errors print without a traceback and exit 1."""
    args = sys.argv[1:] if argv is None else argv
    try:
        if args[:1] == ["validate"] and not {"-h", "--help"} & set(args[1:]):
            # CI and pre-commit run this on every change: skip building the Typer app
            from ml_agent.cli.validate import fast_main

            return fast_main(args[1:])
        import typer

        from ml_agent.cli.app import build_app

        # Typer vendors Click (typer._click): reach its UsageError through a public class
        usage_error: type[Exception] = next(
            c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"
        )
        app = build_app()
        # Not standalone: usage errors come here, to be said in our one line (Click's own
        # are a usage block and a boxed message, and differ from validate's).
        try:
            code = app(args=args, prog_name="ml-agent", standalone_mode=False)
        except usage_error as exc:
            from ml_agent.cli.output import usage_line

            message = exc.format_message()  # type: ignore[attr-defined]
            if not message.strip():  # a bare `ml-agent`: the help is shown already
                return 2
            ctx = getattr(exc, "ctx", None)
            command = ctx.command_path if ctx is not None else "ml-agent"
            if command == "ml-agent" and args and args[0] in app_commands(app):
                command = f"ml-agent {args[0]}"  # a parse error before the command's context
            sys.stderr.write(usage_line(command, message) + "\n")
            return 2
        except typer.Abort:  # Ctrl-C (or EOF) where Click reads input itself
            return 130
        return code if isinstance(code, int) else 0
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
