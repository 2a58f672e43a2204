"""Assembles the Typer app from the command modules; each module registers its commands."""

from __future__ import annotations

import importlib
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from ml_agent import __version__

# Each module has `register(app: typer.Typer) -> None`.
COMMAND_MODULES = (
    "ml_agent.cli.validate",  # validate
    "ml_agent.cli.plan",  # schema, plan
    "ml_agent.cli.runs",  # up, attach, ps, logs, stop, doctor
    "ml_agent.cli.proxy",  # proxy serve, proxy token
    "ml_agent.cli.dashboard",  # dashboard
    "ml_agent.cli.results",  # results
    "ml_agent.cli.pull",  # pull
    "ml_agent.cli.sweep",  # sweep
)

HELP = """Launch an autonomous ML engineer (a Claude agent) in a GPU sandbox, declared in YAML.

Start with `ml-agent up configs/local.yaml` (no Modal account needed), or
`ml-agent validate configs/` in CI.
"""


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ml-agent {__version__}")
        raise typer.Exit()


def _real_metavars(params: list[Any]) -> list[Any]:
    """Help shows what to type: nothing after a flag (not `<bool>`: it takes no value), and the
    parameter's name (`CONFIG`, `--task TASK`) where Typer would show a Python type, unless
    the command names its own metavar."""
    for param in params:
        if param.param_type_name == "argument" and hasattr(param, "display_type_rich"):
            param.display_type_rich = _no_type  # its name is the metavar: no `<str>` after it
        if param.metavar is not None:
            continue
        if getattr(param, "is_flag", False) or getattr(param, "count", False):
            param.metavar = ""
        else:
            param.metavar = (param.name or "value").upper()
    return params


def _no_type(ctx: Any = None) -> None:
    return None


class _Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _real_metavars(super().get_params(ctx))


class _Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _real_metavars(super().get_params(ctx))


def _with_real_metavars(app: typer.Typer) -> None:
    for command in app.registered_commands:
        if command.cls in (None, TyperCommand):
            command.cls = _Command
    for group in app.registered_groups:
        if group.cls in (None, TyperGroup):
            group.cls = _Group
        if group.typer_instance is not None:
            _with_real_metavars(group.typer_instance)


def build_app() -> typer.Typer:
    app = typer.Typer(
        cls=_Group,
        name="ml-agent",
        help=HELP,
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode="markdown",
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Print the version."
        ),
    ) -> None:
        pass

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
    _with_real_metavars(app)
    return app
