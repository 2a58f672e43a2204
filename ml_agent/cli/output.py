"""Console helpers shared by the commands: one stderr console, errors in one format."""

from __future__ import annotations

import sys
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


@cache
def console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


@cache
def err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def print_error(message: str) -> None:
    """`error: <message>` on stderr; plain text when stderr is not a terminal."""
    if sys.stderr.isatty():
        from rich.markup import escape

        err_console().print(f"[bold red]error:[/] {escape(message)}")
    else:
        sys.stderr.write(f"error: {message}\n")


def usage_line(command: str, message: str) -> str:
    """The one form of a usage error (exit 2): `error: <what>; see `<command> --help``."""
    message = " ".join(message.split()).rstrip(".")
    return f"error: {message}; see `{command} --help`"
